"""Markdown rendering of one scenario's JSON record (:func:`to_markdown`): the ``.md`` summary
written beside each JSON. It reads the record only, and imports no other bench module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _ms(v: Any) -> str:
    return "-" if v is None else f"{1e3 * v:.1f}"


def _mib(v: Any) -> str:
    return "-" if v is None else f"{v / 2**20:.2f}"


def _num(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, Callable[[dict], str]]]) -> str:
    head = "| " + " | ".join(h for h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fn(r) for _, fn in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


_STEP_COLS: list[tuple[str, Callable[[dict], str]]] = [
    ("strategy", lambda r: r["strategy"]),
    ("side", lambda r: str(r["image"])),
    ("max_iter", lambda r: str(r["max_iter"])),
    ("fwd it", lambda r: "OOM" if r["oom"] else _num(r["forward_iters_mean"], ".1f")),
    ("bwd it", lambda r: "-" if r["oom"] else _num(r["backward_iters_mean"], ".1f")),
    ("forward ms", lambda r: "-" if r["oom"] else _ms(r["forward_s"])),
    ("backward ms", lambda r: "-" if r["oom"] else _ms(r["backward_s"])),
    ("optim ms", lambda r: "-" if r["oom"] else _ms(r["optim_s"])),
    ("step ms", lambda r: "-" if r["oom"] else _ms(r["step_s"])),
    ("step CPU ms", lambda r: "-" if r["oom"] else _ms(r["step_cpu_s"])),
    ("step / JFB", lambda r: _num(r.get("step_over_jfb"))),
    ("graph MiB", lambda r: "-" if r["oom"] else _mib(r["graph_bytes"])),
    ("graph / JFB", lambda r: _num(r.get("graph_over_jfb"))),
    ("peak CUDA MiB", lambda r: "-" if r["oom"] else _mib(r["peak_cuda_bytes"])),
]


def to_markdown(record: dict[str, Any]) -> str:
    """A human-readable summary (markdown tables) of one scenario's JSON record."""
    res = record["results"]
    lines = [
        f"## `{record['scenario']}` ({record['size']})",
        "",
        f"- command: `{record['command']}`",
        f"- device: {record['device_name']} ({record['device']}), {record['threads']} threads, "
        f"torch {record['torch']}, {record['date']}, load average at start "
        f"{record['loadavg_start']}",
        "",
    ]
    name = record["scenario"]
    if name == "step":
        lines += [f"Model: {res['model']}.", f"Forward: {res['forward_solver']}.",
                  f"Memory: {res['memory_measure']}.", ""]
        for key, title in (("at_tol", "All strategies at the same forward tolerance"),
                           ("iter_sweep", "Forward iteration cap (fixed-iteration forward)"),
                           ("size_sweep", "Image side (fixed-iteration forward)")):
            lines += [f"### {title}", "", _table(res[key], _STEP_COLS), ""]
    elif name == "solver":
        lines += [f"Model: {res['model_source']}; {res['model']}.", ""]
        lines += [_table(res["rows"], [
            ("model", lambda r: r["model"]), ("solver", lambda r: r["solver"]),
            ("samples", lambda r: str(r["samples"])),
            ("mean it", lambda r: _num(r["iters_mean"], ".1f")),
            ("max it", lambda r: str(r["iters_max"])),
            ("converged", lambda r: f"{r['converged_frac']:.0%}"),
            ("batched T calls", lambda r: str(r["batched_T_calls"])),
            ("time s", lambda r: _num(r["time_s"], ".3f")),
            ("CPU s", lambda r: _num(r["time_cpu_s"], ".3f")),
            ("ms/sample", lambda r: _num(r["ms_per_sample"], ".1f")),
        ]), "", "Per-sample iteration histogram:", ""]
        for r in res["rows"]:
            h = r["histogram"]
            pairs = ", ".join(f"{b}: {c}" for b, c in zip(h["bins"], h["counts"], strict=True) if c)
            lines.append(f"- {r['model']}, {r['solver']}: {pairs}")
        lines.append("")
    elif name == "floor":
        lines += [
            f"t_f = {_ms(res['t_f_s'])} ms, t_fb = {_ms(res['t_fb_s'])} ms "
            f"(t_fb/t_f = {res['t_fb_over_t_f']:.2f}); CPU time: t_f = {_ms(res['t_f_cpu_s'])} "
            f"ms, t_fb = {_ms(res['t_fb_cpu_s'])} ms; batch {res['batch']}, side {res['image']}.",
            f"{res['floor_definition']}.", "",
            _table(res["rows"], [
                ("solver", lambda r: r["solver"]), ("n", lambda r: str(r["iterations"])),
                ("overhead ms/it", lambda r: _num(1e3 * r["solver_overhead_per_iter_s"], ".3f")),
                ("fwd ms", lambda r: _ms(r["forward_s"])),
                ("bwd ms", lambda r: _ms(r["backward_s"])),
                ("optim ms", lambda r: _ms(r["optim_s"])),
                ("floor ms", lambda r: _ms(r["floor_s"])),
                ("(fwd+bwd)/floor", lambda r: _num(r["fwd_bwd_over_floor"])),
                ("(fwd+bwd)/(floor+n overhead)",
                 lambda r: _num(r["fwd_bwd_over_floor_plus_overhead"])),
                ("CPU-time: (fwd+bwd)/floor", lambda r: _num(r["fwd_bwd_over_floor_cpu"])),
                ("CPU-time: .../(floor+n overhead)",
                 lambda r: _num(r["fwd_bwd_over_floor_plus_overhead_cpu"])),
            ]), "",
        ]
    elif name == "peer":
        if res["skipped"]:
            lines += [f"Skipped: {res['reason']}.", ""]
        else:
            lines += [f"torchdeq {res['torchdeq_version']}. {res['settings']}", "",
                      _table(res["rows"], [
                          ("method", lambda r: r["method"]), ("regime", lambda r: r["regime"]),
                          ("T calls fwd", lambda r: _num(r["T_calls_forward"], ".0f")),
                          ("T calls bwd", lambda r: _num(r["T_calls_backward"], ".0f")),
                          ("bwd solver it", lambda r: _num(r["backward_iters_mean"], ".1f")),
                          ("forward ms", lambda r: _ms(r["forward_s"])),
                          ("backward ms", lambda r: _ms(r["backward_s"])),
                          ("step ms", lambda r: _ms(r["step_s"])),
                          ("step CPU ms", lambda r: _ms(r["step_cpu_s"])),
                          ("graph MiB", lambda r: _mib(r["graph_bytes"])),
                      ]), "", "Gradient agreement at the initial weights:", ""]
            lines += [f"- {k}: {v:.4g}" for k, v in res["gradient_agreement"].items()]
            lines.append("")
    elif name == "inference":
        lines += [f"Model: {res['model']}. Solver: {res['solver']}.", "",
                  _table(res["rows"], [
                      ("side", lambda r: str(r["image"])), ("batch", lambda r: str(r["batch"])),
                      ("ms/image", lambda r: "OOM" if r["oom"] else _num(r["ms_per_image"], ".1f")),
                      ("CPU ms/image",
                       lambda r: "-" if r["oom"] else _num(r["ms_per_image_cpu"], ".1f")),
                      ("mean it", lambda r: "-" if r["oom"] else _num(r["iters_mean"], ".1f")),
                      ("ms per T per image",
                       lambda r: "-" if r["oom"] else _num(r["ms_per_T_per_image"], ".2f")),
                  ]), ""]
    elif name == "malloc":
        if res["skipped"]:
            lines += [f"Skipped: {res['reason']}.", ""]
        else:
            lines += [f"Model: {res['model']}. {res['protocol']}.", "",
                      _table(res["rows"], [
                          ("allocator", lambda r: r["malloc"]),
                          ("inference ms", lambda r: _ms(r["inference_s"])),
                          ("inference CPU ms", lambda r: _ms(r["inference_cpu_s"])),
                          ("JFB step ms", lambda r: _ms(r["step_s"])),
                          ("JFB step CPU ms", lambda r: _ms(r["step_cpu_s"])),
                      ]), ""]
    elif name == "photo":
        if res["skipped"]:
            lines += [f"Skipped: {res['reason']}.", ""]
        else:
            lines += [f"Model: {res['model']}. Photos: {res['photos']}. Allocator: "
                      f"{res['allocator']}.", "",
                      _table(res["rows"], [
                          ("photo", lambda r: f"{r['width']}x{r['height']}"),
                          ("threads", lambda r: str(r["threads"])),
                          ("wall s", lambda r: _num(r["wall_s"], ".1f")),
                          ("user s", lambda r: _num(r["user_s"], ".1f")),
                          ("system s", lambda r: _num(r["system_s"], ".1f")),
                          ("CPU s / MP", lambda r: _num(r["cpu_s_per_megapixel"], ".1f")),
                          ("peak RSS GiB", lambda r: _num(r["peak_rss_bytes"] / 2**30, ".2f")),
                          ("iterations", lambda r: ",".join(map(str, r["iterations"]))),
                          ("PSNR dB", lambda r: _num(r["psnr_db"], ".2f")),
                          ("denoiser s (wall)", lambda r: _num(r["denoiser_wall_s"], ".1f")),
                          ("denoiser GFLOP/s", lambda r: _num(r["denoiser_gflops"], ".1f")),
                          ("denoiser floor s", lambda r: _num(r["denoiser_floor_s"], ".1f")),
                      ]), ""]
            for r in res["rows"]:
                lines += [f"- {r['width']}x{r['height']}: {note}" for note in r["notes"]]
            lines.append("")
    ratios = {k: v for k, v in res.items() if k.startswith("ratio")}
    for title, d in ratios.items():
        lines += [f"{title}:", ""] + [f"- {k}: {_num(v, '.3g')}" for k, v in d.items()] + [""]
    for note in record.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines).rstrip() + "\n"
