"""docs/benchmarks.md, written from a run's JSON: the page's figures are always the run's own."""

from __future__ import annotations

from typing import Any


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _goal(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(r: dict[str, Any], name: str) -> str:
    m, s = r["machine"], r["summary"]
    lines = [
        "# Benchmarks: what to expect before buying hardware",
        "",
        f"Made by `benchmarks/run_all.py` ({'quick' if r['quick'] else 'full'} run,"
        f" {r['seconds']['total'] / 60:.1f} min)"
        f" on **{m['cpu']}**, {m['cpus']} vCPUs, {m['threads']} threads, {m['ram_gb']} GB RAM,"
        f" ISA {', '.join(m['isa'])}; read bandwidth measured by the suite: "
        + ", ".join(f"{bw} GB/s at {t} thread(s)" for t, bw in m["read_bandwidth_gbs"].items())
        + f". Raw data: [`benchmarks/{name}.json`](benchmarks/{name}.json).",
        "",
        *([f"Note: {r['remeasured']}.", ""] if r.get("remeasured") else []),
        "The models are **random-weight GGUFs with the seed models' exact shapes**"
        " (`benchmarks/seed_models.py`): Qwen3-VL-4B-Instruct's text tower and projector, Qwen2.5-Omni-7B's"
        " thinker and its vision + audio projector, quantized to Q4_K_M by llama.cpp's own quantizer."
        " Speed and memory are the seeds'; the text they write is noise. Their tokenizer is a BPE trained"
        " on Home Assistant's own English strings (4.2 chars/token on prose, 2.5-2.7 on entity lists and"
        " tool JSON), so a standing prompt has about the seeds' token count.",
        "",
        "## Goals",
        "",
        _row("figure", "measured", "goal", ""),
        _row("---", "---", "---", "---"),
    ]
    goals = s["goals_met"]
    for key, limit in (
        ("decode_ratio_4b", ">= 0.97"),
        ("decode_ratio_7b", ">= 0.97"),
        ("rss_over_file_kv_4b", "<= 1.15"),
        ("ttft_warm_over_cold", "<= 0.03"),
        ("ttft_restored_over_cold", "<= 0.05"),
        ("load_7b_warm_ms", "<= 1000"),
    ):
        lines.append(_row(f"`{key}`", s[key], limit, _goal(goals[key])))
    lines.append(
        _row(
            "peak RSS of the workers (any sample)",
            f"{s['peak_rss_mb']} MB",
            f"<= {s['budget_mb']} MB",
            _goal(goals["rss_never_above_budget"]),
        )
    )
    lines += _decode(r) + _assist(r) + _quality(r) + _lookup(r) + _context(r) + _threads(r)
    return "\n".join(lines) + "\n"


def _decode(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Decode and prefill: raw llama-cpp-python vs the engine",
        "",
        "Same file, threads and load variant (no repacking); runs alternate; medians. The engine's figure"
        " is taken on the event loop after the tokens crossed the worker's pipe.",
        "",
        _row(
            "shape",
            "raw decode tok/s",
            "engine decode tok/s",
            "ratio",
            "roofline tok/s",
            "raw / roofline",
            "raw prefill tok/s",
            "engine prefill tok/s",
            "worker RSS",
            "file + KV (n_ctx 4096)",
            "RSS / (file + KV)",
        ),
        _row(*["---"] * 11),
    ]
    for label, d in r["decode"].items():
        med = {
            k: sorted(d[k])[len(d[k]) // 2]
            for k in ("raw_decode_tps", "engine_decode_tps", "raw_prefill_tps", "engine_prefill_tps")
        }
        lines.append(
            _row(
                label,
                f"{med['raw_decode_tps']:.2f}",
                f"{med['engine_decode_tps']:.2f}",
                d["decode_ratio"],
                d["roofline_tps"],
                d["raw_over_roofline"],
                f"{med['raw_prefill_tps']:.1f}",
                f"{med['engine_prefill_tps']:.1f}",
                f"{d['rss_mb']} MB",
                f"{d['file_mb']} + {d['kv_mb']} MB",
                d["rss_over_file_kv"],
            )
        )
    o = r["overhead"]
    lines += [
        "",
        f"Router decision: {o['route_us']} µs per turn; a request costs {o['request_beyond_worker_ttft_ms']:.1f} ms"
        " beyond the worker's own time to first token (queue, pipe, event loop), gemma 270M.",
        "",
        f"![decode](benchmarks/{r['name']}-decode.png)",
    ]
    return lines


def _assist(r: dict[str, Any]) -> list[str]:
    a = r["assist"]
    return [
        "",
        "## Assist through a real Home Assistant (4B shape)",
        "",
        f"An agent with the Assist API on and {a['exposed_entities']} exposed lights and switches: a"
        f" {a['standing_prompt_tokens']}-token standing prompt (instructions, tools, entities). Each turn goes"
        f" through `/api/conversation/process` and answers {a['max_tokens']} tokens.",
        "",
        _row("", "time to first token", "prompt tokens evaluated"),
        _row("---", "---", "---"),
        _row("cold (nothing cached)", f"{a['ttft_cold_ms']} ms", a["cold"]["evaluated_prompt_tokens"]),
        _row(
            "warm (prefix in the worker), median",
            f"{a['ttft_warm_ms']:.0f} ms",
            sorted(t["evaluated_prompt_tokens"] for t in a["warm"])[len(a["warm"]) // 2],
        ),
        _row(
            "first turn after a restart (KV from disk)",
            f"{a['ttft_restored_ms']} ms",
            a["restored"]["evaluated_prompt_tokens"],
        ),
        "",
        f"The agent warms its standing prompt by itself once Home Assistant runs. First start: ready"
        f" {a['setup_to_ready_s']} s after the integration was added (the load calibration's three trial loads"
        f" and the cold prompt; last warm: {a['start_warm']['source']}, {a['start_warm']['ms']} ms). After the"
        f" restart, last warm: {a['restart_warm']['source']}, {a['restart_warm']['ms']} ms."
        f" Full turns over {len(a['warm'])} warm turns: P50 {a['turn_p50_ms']} ms, P95 {a['turn_p95_ms']} ms.",
        "",
        f"![assist](benchmarks/{r['name']}-assist.png)",
    ]


def _quality(r: dict[str, Any]) -> list[str]:
    q = r["quality"]
    lines = [
        "",
        "## The quality model on demand (7B shape, vision + audio projector) beside the fast one",
        "",
        _row("", "ms"),
        _row("---", "---"),
        _row("7B loaded on demand, answering text: cold page cache", q["load_7b_cold"]["wall_ms"]),
        _row("... its projector loaded too (in the background meanwhile)", q["load_7b_cold"]["projector_ready_ms"]),
        _row("7B loaded on demand, answering text: warm page cache, spare worker", q["load_7b_warm"]["wall_ms"]),
        _row("... its projector loaded too", q["load_7b_warm"]["projector_ready_ms"]),
        _row("first image analysis after the load (TTFT, one 672 px frame)", q["first_image"]["ttft_ms"]),
    ]
    for n, v in q["images"].items():
        lines.append(_row(f"{n} frame(s) of 672 x 378 px: encode + prefill (time to first token)", v["ttft_ms"]))
    for sec, v in q["audio"].items():
        lines.append(_row(f"{sec} s audio clip: encode + prefill ({v['prompt_tokens']} prompt tokens)", v["ttft_ms"]))
    lines.append(_row("a text-only question to the 7B", q["text_only"]["ttft_ms"]))
    lines += [
        "",
        f"Both models resident: **{q['both_models_rss_mb']} MB** (fast {q['rss_mb']['fast']} + quality"
        f" {q['rss_mb']['quality']}) against the seed's 12 GB. Peak RSS of the workers, sampled every 50 ms: "
        + ", ".join(f"{p} {v} MB" for p, v in q["peak_rss_mb"].items())
        + ".",
        "",
        f"![memory](benchmarks/{r['name']}-memory.png)",
        f"![media](benchmarks/{r['name']}-media.png)",
    ]
    return lines


def _lookup(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Prompt-lookup speculative decoding",
        "",
        "Speed-up = engine tok/s with prompt lookup / raw tok/s without it, greedy, same threads. Drafting"
        " measures itself as it runs and stays on only while it pays.",
        "",
        _row("model", "text", "raw", "engine, no drafts", "engine, prompt lookup", "speed-up", "drafts accepted"),
        _row(*["---"] * 7),
    ]
    for model in r["prompt_lookup"].values():
        for case in ("assist", "free"):
            c = model[case]
            drafts = f"{c['drafts']['accepted']} / {c['drafts']['proposed']}"
            lines.append(
                _row(
                    model["model"],
                    case,
                    c["raw_tps"],
                    c["engine_tps_without"],
                    c["engine_tps_with"],
                    f"**{c['speedup_over_raw']}**",
                    drafts,
                )
            )
    lines += ["", f"![speculation](benchmarks/{r['name']}-speculation.png)"]
    return lines


def _context(r: dict[str, Any]) -> list[str]:
    c = r["context_size"]
    return [
        "",
        "## The seed's `auto_reduce_context`",
        "",
        f"Decode of a short turn, 4B shape: n_ctx 512 {c['512']['decode_tps']} tok/s, n_ctx 4096"
        f" {c['4096']['decode_tps']} tok/s (ratio {c['small_over_full_decode']}). llama.cpp attends only over"
        " the cells in use, so a smaller context buys little; and Assist's standing prompt alone is"
        f" {r['assist']['standing_prompt_tokens']} tokens, more than a 512-token context holds, while switching"
        " contexts would mean a reload and the loss of the cached prompt. The option is not kept.",
    ]


def _threads(r: dict[str, Any]) -> list[str]:
    d = r["decode"]
    return [
        "",
        "## On other machines",
        "",
        f"Measured here: {r['machine']['threads']} threads only (no other machine was lent to this run)."
        " Decode is bound by memory bandwidth: expect about *(raw / roofline) x bandwidth / bytes per token*."
        f" Bytes per token: 4B shape {round(_bpt(r, '4b') / 1e9, 2)} GB,"
        f" 7B shape {round(_bpt(r, '7b') / 1e9, 2)} GB. With this machine's efficiency"
        f" ({d['4b']['raw_over_roofline']} of the roofline for the 4B), a 6-thread desktop with dual-channel"
        " DDR4-3200 (~40 GB/s read) would decode the 4B at about"
        f" {d['4b']['raw_over_roofline'] * 40e9 / _bpt(r, '4b'):.0f} tok/s and the 7B at about"
        f" {d['7b']['raw_over_roofline'] * 40e9 / _bpt(r, '7b'):.0f} tok/s: an estimate from the roofline, not"
        " a measurement. Prefill is bound by compute and scales with cores.",
    ]


def _bpt(r: dict[str, Any], label: str) -> float:
    d = r["decode"][label]
    bandwidth = r["machine"]["read_bandwidth_gbs"][str(r["machine"]["threads"])]
    return float(bandwidth) * 1e9 / float(d["roofline_tps"])
