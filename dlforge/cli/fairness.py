"""`dlforge fairness RUN --data FILE|val|test --sensitive COL[,COL] [--json]`: a tabular classifier's metrics per
group, with disparities and bootstrap intervals, written to RUN/fairness.json and the model card
(dlforge.deploy.fairness)."""

from __future__ import annotations

import typer

from dlforge.cli.output import console, emit_json


def register(app: typer.Typer) -> None:
    app.command("fairness")(fairness_cmd)


def fairness_cmd(
    run: str = typer.Argument(..., help="a trained tabular classifier (run folder, name or 'latest')"),
    data: str = typer.Option(..., "--data", help="a CSV/Parquet file with the features, the target and the "
                                                 "sensitive columns; or val or test: the run's own split"),
    sensitive: str = typer.Option(..., "--sensitive", help="the column(s) that define groups, e.g. female,black "
                                                           "(each alone, and their intersection)"),
    min_group: int = typer.Option(30, "--min-group", min=1, help="groups with fewer examples are flagged"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="bootstrap resamples of the 95% intervals "
                                                                   "(0: none)"),
    seed: int = typer.Option(0, "--seed", help="the bootstrap's seed"),
    as_json: bool = typer.Option(False, "--json", help="print fairness.json"),
) -> None:
    """Audit a tabular classifier by group, as Fairlearn measures it: per group n, accuracy, F1, selection rate,
    TPR, FPR and calibration; demographic-parity and equalized-odds differences and ratios; 95% bootstrap
    intervals. Writes RUN/fairness.json and the model card's Quantitative analyses."""
    from dlforge.errors import DlforgeError

    columns = [c.strip() for c in sensitive.split(",") if c.strip()]
    if not columns or len(set(columns)) != len(columns):
        raise DlforgeError(f"--sensitive: {sensitive!r}; expected one column or several different ones, "
                           "e.g. female,black")
    if data not in ("val", "test"):
        from dlforge.paths import existing_file

        existing_file(data, "--data (a CSV or Parquet file, or val or test)")
    from dlforge.runs.rundir import resolve_run

    run = str(resolve_run(run))  # a wrong path is said before torch loads
    from dlforge.deploy.fairness import fairness

    audit = fairness(run, data, columns, min_group=min_group, n_boot=bootstrap, seed=seed)
    if as_json:
        emit_json(audit)
        return
    show(audit)


def show(audit: dict) -> None:
    """The audit as rich tables: per analysis and audited class, a row per group (performance, then calibration),
    each figure over its 95% interval, then the disparities."""
    from rich.table import Table

    def cell(figure: dict, two_lines: bool = True) -> str:
        if figure["value"] is None:
            return "-"
        ci = figure["ci"]
        return f"{figure['value']:.3f}" + (f"{chr(10) if two_lines else ' '}[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    parts = {"performance": ("accuracy", "f1", "selection_rate", "tpr", "fpr"),
             "calibration": ("mean_score", "observed_rate", "ece")}
    console.print(f"{audit['run']}: {audit['data']}, {audit['n']:,} examples; 95% bootstrap intervals from "
                  f"{audit['bootstrap']} resamples (seed {audit['seed']})", soft_wrap=True)
    for analysis in audit["analyses"]:
        for name in audit["classes"]:
            for part, keys in parts.items():
                table = Table(title=f"{part} by {' x '.join(analysis['columns'])}, class {name}")
                for header in ("group", "n", *keys):
                    table.add_column(header.replace("_", " "), justify="left" if header == "group" else "right")
                for g in [audit["overall"], *analysis["groups"]]:
                    figures = [g["accuracy"] if k == "accuracy" else g["classes"][name][k] for k in keys]
                    table.add_row(g["name"] + (" *" if g.get("small") else ""), f"{g['n']:,}", *map(cell, figures))
                console.print(table)
            gaps = analysis["disparities"][name]
            for key, figure in gaps.items():
                console.print(f"  {key.replace('_', ' ')}: {cell(figure, two_lines=False)}", soft_wrap=True)
        if analysis["flagged"]:
            console.print(f"  * fewer than {audit['min_group']} examples: {'; '.join(analysis['flagged'])}",
                          soft_wrap=True)
    console.print(f"wrote {audit['run']}/fairness.json" + (f" and {audit['card']}" if audit["card"] else ""),
                  soft_wrap=True)
