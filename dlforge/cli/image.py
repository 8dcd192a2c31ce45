"""`dlforge image ops IN OUT --op canny --op gaussian_blur:ksize=5`: OpenCV operations on one image file.
`dlforge image attention RUN IN --out OUT`: where a ViT run attends in one image file."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def image() -> None:
    """Image files: apply the OpenCV operations the image datasets use (`data.ops`), draw a ViT's attention."""


@app.command("ops")
def ops_cmd(
    input_path: Path = typer.Argument(..., help="image file to read (.png, .jpg, .bmp, ...)"),
    output_path: Path = typer.Argument(..., help="image file to write; the extension picks the format"),
    op: list[str] = typer.Option(None, "--op", help="name, name:key=value,key=value, or name:VALUE for the op's "
                                                     "first parameter (threshold:otsu); repeat, applied in order"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Apply image ops in order: `dlforge image ops in.png out.png --op grayscale --op canny:low=50,high=150`.

    Ops and their parameters, the first one's name optional (`threshold:otsu`, `resize:64`): grayscale, resize
    (size, interpolation), gaussian_blur (ksize, sigma), canny (low, high, aperture, l2_gradient), threshold (value:
    a number or otsu, mode: binary or binary_inv, max_value), equalize.
    """
    from dlforge.data.imageops import parse_op, read_image, run_ops, validate_ops, write_image
    from dlforge.paths import output_file

    output_file(output_path, "an image file to write")  # checked, as the ops are, before OpenCV loads
    ops = [parse_op(text) for text in op or []]
    checked = validate_ops(ops, where="--op")
    img = read_image(input_path)
    out = run_ops(img, checked)
    write_image(output_path, out)
    summary = {"input": str(input_path), "output": str(output_path), "input_shape": list(img.shape),
               "output_shape": list(out.shape), "ops": ops}
    if as_json:
        emit_json(summary)
        return
    names = ", ".join(o["op"] for o in ops) or "no ops"
    shape_in, shape_out = "x".join(map(str, img.shape)), "x".join(map(str, out.shape))
    console.print(f"{input_path} ({shape_in}) -> {output_path} ({shape_out}): {names}", highlight=False, soft_wrap=True)


@app.command("attention")
def attention_cmd(
    run: str = typer.Argument(..., help="a ViT run: folder, name or 'latest' (or a model folder)"),
    input_path: Path = typer.Argument(..., help="image file to read; prepared as the run's training images"),
    out: Path = typer.Option(..., "--out", help="PNG file to write: the image beside it under the heat map"),
    method: str = typer.Option("rollout", "--method", help="rollout (every block) or last (the last block)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Where a ViT looks: `dlforge image attention latest shirt.png --out runs/attention.png`.

    rollout: every block's attention, with its residual path, multiplied through the network (Abnar & Zuidema
    2020); last: the last block's. Heads averaged; the class token's row over the patches.
    """
    from dlforge.paths import existing_file, output_file

    existing_file(input_path, "an image file")  # the paths before the run and torch are loaded
    output_file(out, "a PNG file to write (--out)", suffixes=(".png",))
    from dlforge.eval.attention import attention_overlay

    summary = attention_overlay(run, input_path, out, method)
    if as_json:
        emit_json(summary)
        return
    console.print(f"{input_path}: {summary['prediction']} ({summary['probability']:.2f}); attention ({method}) "
                  f"-> {out}", highlight=False, soft_wrap=True)
