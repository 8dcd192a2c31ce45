"""`python -m dlforge ...` and `torchrun --nproc_per_node=N -m dlforge train ...`."""

from dlforge.cli.main import main

if __name__ == "__main__":
    main()
