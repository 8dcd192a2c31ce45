"""`dlforge sample`: images from a generative run (VAE, GAN, diffusion), as a PNG grid or a folder of PNGs."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_cmd)


def sample_cmd(
    run: str = typer.Argument(..., help="a generative run (folder, name or 'latest') or its model folder"),
    n: int = typer.Option(64, "--n", min=1, help="how many images"),
    out: Path = typer.Option(Path("samples.png"), "--out", help="a .png file (one grid) or a folder (a PNG each)"),
    steps: int = typer.Option(None, "--steps", min=1, help="sampling steps of a diffusion model (default: its own)"),
    seed: int = typer.Option(0, "--seed", help="the same seed gives the same images"),
    label: str = typer.Option(None, "--class", help="a class name or id, for a class-conditional model"),
    guidance: float = typer.Option(None, "--guidance", help="classifier-free guidance scale of a class-conditional "
                                                             "diffusion model (default: its own; 1: none)"),
    as_json: bool = typer.Option(False, "--json", help="print a summary as JSON"),
) -> None:
    """Sample images: `dlforge sample latest --n 64 --out grid.png`."""
    from dlforge.paths import output_file, output_folder

    if out.suffix.lower() == ".png":  # a wrong --out fails before torch loads
        output_file(out, "the PNG grid to write the samples to (--out)")
    else:
        output_folder(out, "the folder to write one PNG per sample to (--out)")
    from dlforge.eval.sampling import sample_run

    summary = sample_run(run, n=n, out=out, steps=steps, seed=seed, label=label, guidance=guidance)
    if as_json:
        emit_json(summary)
    else:
        console.print(f"{summary['n']} samples of {summary['run']} written to {summary['out']} "
                      f"({summary['seconds']:.1f} s, seed {summary['seed']})")
