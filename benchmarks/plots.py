"""The suite's PNG plots, one per question a user asks before buying hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(ax: Any, bars: Any, fmt: str = "{:.1f}") -> None:
    for bar in bars:
        ax.text(
            bar.get_x() + bar.get_width() / 2, bar.get_height(), fmt.format(bar.get_height()), ha="center", va="bottom"
        )


def decode(result: dict[str, Any], path: Path) -> None:
    plt = _plt()
    shapes = result["decode"]
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(shapes)
    x = range(len(names))
    med = {k: [sorted(s[k])[len(s[k]) // 2] for s in shapes.values()] for k in ("raw_decode_tps", "engine_decode_tps")}
    _label(ax, ax.bar([i - 0.27 for i in x], med["raw_decode_tps"], 0.27, label="raw llama-cpp-python", color="#888"))
    _label(ax, ax.bar(list(x), med["engine_decode_tps"], 0.27, label="through the engine", color="#1f77b4"))
    roof = [s["roofline_tps"] for s in shapes.values()]
    _label(ax, ax.bar([i + 0.27 for i in x], roof, 0.27, label="roofline (bandwidth / bytes per token)", color="#ddd"))
    ax.set_xticks(list(x), [f"{n}\nratio {shapes[n]['decode_ratio']:.3f}" for n in names])
    ax.set_ylabel("decode tokens/s (median)")
    ax.set_title(f"Decode, {result['machine']['threads']} threads, {result['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def assist(result: dict[str, Any], path: Path) -> None:
    plt = _plt()
    a = result["assist"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    values = [a["ttft_cold_ms"], a["ttft_warm_ms"], a["ttft_restored_ms"]]
    bars = left.bar(["cold", "warm (prefix)", "after restart (disk)"], values, color=["#d62728", "#2ca02c", "#ff7f0e"])
    _label(left, bars, "{:.0f} ms")
    left.set_yscale("log")
    left.set_ylabel("time to first token, ms (log)")
    left.set_title(f"Assist TTFT, {a['standing_prompt_tokens']}-token standing prompt", fontsize=9)
    walls = [t["wall_ms"] / 1000 for t in a["warm"]]
    right.plot(range(1, len(walls) + 1), walls, "o-")
    right.axhline(a["turn_p50_ms"] / 1000, color="#2ca02c", ls="--", label=f"P50 {a['turn_p50_ms'] / 1000:.1f} s")
    right.axhline(a["turn_p95_ms"] / 1000, color="#d62728", ls=":", label=f"P95 {a['turn_p95_ms'] / 1000:.1f} s")
    right.set_xlabel("turn")
    right.set_ylabel(f"full turn, s ({a['max_tokens']} tokens out)")
    right.set_title("Assist turns through Home Assistant", fontsize=9)
    right.legend(fontsize=8)
    _save(fig, path)


def memory(result: dict[str, Any], path: Path) -> None:
    plt = _plt()
    q = result["quality"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    shapes = result["decode"]
    names = list(shapes)
    x = range(len(names))
    left.bar(
        [i - 0.2 for i in x],
        [shapes[n]["file_mb"] + shapes[n]["kv_mb"] for n in names],
        0.4,
        label="file + KV",
        color="#ccc",
    )
    _label(
        left, left.bar([i + 0.2 for i in x], [shapes[n]["rss_mb"] for n in names], 0.4, label="worker RSS"), "{:.0f}"
    )
    left.set_xticks(list(x), [f"{n}\n{shapes[n]['rss_over_file_kv']:.2f} x" for n in names])
    left.set_ylabel("MB")
    left.set_title("Resident memory per model", fontsize=9)
    left.legend(fontsize=8)
    phases = list(q["peak_rss_mb"])
    _label(right, right.bar(phases, [q["peak_rss_mb"][p] for p in phases], color="#1f77b4"), "{:.0f}")
    right.axhline(q["budget_mb"], color="#d62728", ls="--", label=f"budget / seed limit {q['budget_mb']} MB")
    right.set_ylabel("peak RSS of the workers, MB")
    right.set_title(f"Both models resident: {q['both_models_rss_mb']} MB", fontsize=9)
    right.tick_params(axis="x", labelrotation=20, labelsize=7)
    right.legend(fontsize=8)
    _save(fig, path)


def media(result: dict[str, Any], path: Path) -> None:
    plt = _plt()
    q = result["quality"]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = ["7B load (cold cache)", "7B load (warm cache)"] + [f"{n} frame(s)" for n in q["images"]]
    labels += [f"audio {s} s" for s in q["audio"]]
    values = [q["load_7b_cold"]["wall_ms"], q["load_7b_warm"]["wall_ms"]]
    values += [v["ttft_ms"] for v in q["images"].values()] + [v["ttft_ms"] for v in q["audio"].values()]
    _label(ax, ax.bar(labels, [v / 1000 for v in values], color="#9467bd"), "{:.1f} s")
    ax.set_ylabel("seconds (load; or time to first token: encode + prefill)")
    ax.set_title("The quality model on demand: load and media cost", fontsize=9)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    _save(fig, path)


def speculation(result: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    labels, raw, without, with_ = [], [], [], []
    for model in result["prompt_lookup"].values():
        for case in ("assist", "free"):
            labels.append(f"{model['model'][:18]}\n{case}")
            raw.append(model[case]["raw_tps"])
            without.append(model[case]["engine_tps_without"])
            with_.append(model[case]["engine_tps_with"])
    x = range(len(labels))
    ax.bar([i - 0.27 for i in x], raw, 0.27, label="raw, no drafts", color="#888")
    ax.bar(list(x), without, 0.27, label="engine, no drafts", color="#aec7e8")
    _label(ax, ax.bar([i + 0.27 for i in x], with_, 0.27, label="engine, prompt lookup", color="#1f77b4"))
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("decode tokens/s (median)")
    ax.set_title("Prompt-lookup speculative decoding", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


ALL = {"decode": decode, "assist": assist, "memory": memory, "media": media, "speculation": speculation}
