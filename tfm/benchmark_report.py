"""The markdown table of `tfm bench` results (see `tfm.benchmark`)."""


def _rate(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def format_markdown(results):
    """The results as a markdown table (one row per case) followed by the measured peak/bandwidth."""
    lines = ["| case | metric | tfm | KerasHub | tfm / KerasHub | MFU tfm | MFU KerasHub | notes |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        mfu = [f"{r[k]:.1%}" if r.get(k) is not None else "–" for k in ("mfu_tfm", "mfu_keras_hub")]
        if "tfm_path" in r:
            notes = f"Trainer {_rate(r['tfm_trainer'])} · fit {_rate(r['tfm_fit'])}"
            if "tfm_fit_bf16" in r:
                notes += (f" · fit bf16 {_rate(r['tfm_fit_bf16'])}; KerasHub fit bf16 {_rate(r['keras_hub_bf16'])};"
                          f" tfm / faster KerasHub {r['ratio_vs_best_keras_hub']:.2f}×")
        elif r.get("bandwidth_bound"):
            notes = f"bandwidth bound {_rate(r['bandwidth_bound'])} (tfm at {r['tfm_fraction_of_bound']:.0%})"
        else:
            notes = ""
        lines.append(f"| {r['name']} | {r['metric']} | {_rate(r['tfm'])} | {_rate(r['keras_hub'])} | "
                     f"{r['ratio']:.2f}× | {mfu[0]} | {mfu[1]} | {notes} |")
    facts = []
    peak = next((r["peak_flops"] for r in results if r.get("peak_flops")), None)
    bandwidth = next((r["bandwidth"] for r in results if r.get("bandwidth")), None)
    if results and results[0].get("machine"):
        facts.append(f"{results[0]['machine']}, {results[0].get('dtype', 'float32')}")
    if peak:
        facts.append(f"measured matmul peak {peak / 1e9:,.1f} GFLOP/s")
    peak_bf16 = next((r["peak_flops_bfloat16"] for r in results if r.get("peak_flops_bfloat16")), None)
    if peak_bf16:
        facts.append(f"bf16 matmul peak {peak_bf16 / 1e9:,.1f} GFLOP/s (MFU of a bf16 path is against it)")
    if bandwidth:
        facts.append(f"measured read bandwidth {bandwidth / 1e9:.1f} GB/s")
    if facts:
        lines += ["", "; ".join(facts) + "."]
    return "\n".join(lines)
