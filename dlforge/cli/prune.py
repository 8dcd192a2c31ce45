"""`dlforge prune RUN --sparsity 0.9 [--structured] [--finetune-steps N]`: a pruned, fine-tuned copy of a run, and
what pruning really did (dlforge.deploy.prune_report)."""

from __future__ import annotations

import typer

from dlforge.cli.output import console, emit_json


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)


def prune_cmd(
    run: str = typer.Argument(..., help="a trained run (folder, name or 'latest')"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides of the fine-tuning run, e.g. train.lr=1e-4"),
    sparsity: str = typer.Option(..., "--sparsity", help="fraction to remove: of the weights, or of each group's "
                                                         "channels with --structured; several (0.5,0.8,0.9): a sweep"),
    structured: bool = typer.Option(False, "--structured", help="remove whole channels (conv/linear), for real"),
    finetune_steps: int = typer.Option(500, "--finetune-steps", min=1, help="fine-tuning steps after pruning"),
    scope: str = typer.Option("global", "--scope", help="unstructured: global (one threshold) or layer"),
    schedule: str = typer.Option("oneshot", "--schedule", help="unstructured: oneshot, or gradual (Zhu & Gupta's "
                                                               "cubic ramp over the fine-tuning)"),
    lr_scale: float = typer.Option(0.1, "--lr-scale", min=0, help="fine-tuning learning rate: this times the run's"),
    rounds: int = typer.Option(10, "--rounds", min=1, help="paired rounds of the latency measurement"),
    as_json: bool = typer.Option(False, "--json", help="print the prune.json of each run (a list)"),
) -> None:
    """Prune a trained run and fine-tune it with the Trainer: a new run per sparsity, with prune.json stating the
    parameters, file size, latency at batch 1 and 64, and test metrics before and after."""
    from dlforge.errors import DlforgeError

    try:
        sparsities = [float(s) for s in sparsity.split(",") if s.strip()]
    except ValueError:
        raise DlforgeError(f"--sparsity: {sparsity!r}; expected a fraction (0.9) or several (0.5,0.8,0.9)") from None
    if scope not in ("global", "layer"):
        raise DlforgeError(f"--scope: {scope!r}; expected global or layer")
    if schedule not in ("oneshot", "gradual"):
        raise DlforgeError(f"--schedule: {schedule!r}; expected oneshot or gradual")
    from dlforge.runs.rundir import resolve_run

    run = str(resolve_run(run))  # a wrong path is said before torch loads
    from dlforge.api import prune

    reports = prune(run, sparsities, structured, finetune_steps, scope, schedule, lr_scale, list(overrides or []),
                    rounds)
    if as_json:
        emit_json(reports)
        return
    for r in reports:
        p, f = r["params"], r["file_bytes"]
        console.print(f"{r['run']}: {'channels' if r['structured'] else 'weights'} pruned {r['sparsity']:.0%}; "
                      f"parameters {p['before']['nonzero']:,} -> {p['after']['nonzero']:,} nonzero "
                      f"({p['after']['total']:,} stored); file {f['before']:,} -> {f['after']:,} bytes "
                      f"({f['after_sparse_csr']:,} if stored sparse)", soft_wrap=True)
        before, after = r["metrics"]["before"], r["metrics"]["after"]
        console.print("  test: " + ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in after if k in before),
                      soft_wrap=True)
        for key, row in r["latency"].items():
            console.print(f"  {key}: {row['before_ms']:.3g} ms -> {row['after_ms']:.3g} ms "
                          f"({row['speedup_median']:.2f}x as fast)", soft_wrap=True)
        for note in r["notes"]:
            console.print(f"  note: {note}", soft_wrap=True)
