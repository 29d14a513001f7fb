# bench/report.py: the systems and figures of bench/run, and its report:
# the tables (figures, ratios to local, disk, zram and the floor, latency and
# memd CPU), results.json and plot.png.
import json, os, time

MIB = 1 << 20


def limit_of(a, ratio):
    return int(a.working_set * ratio / 100) * MIB


SYSTEMS = ["local", "disk", "zram", "floor-4k", "floor-2m", "xmem-shm", "xmem-tcp"]
KINDS = ["seq_write", "seq_read", "rand_read", "rand_write", "zipf_read"]
FIGURES = {"seq_write": ["seq_write_first", "seq_write_rewrite"], "seq_read": ["seq_read"],
           "rand_read": ["rand_read"], "rand_write": ["rand_write"], "zipf_read": ["zipf_read"],
           "redis": ["redis_set", "redis_get"]}
UNITS = {"redis_set": "krps", "redis_get": "krps", "rand_read": "kops/s",
         "rand_write": "kops/s", "zipf_read": "kops/s"}

def fmt_ratio(r):
    return ("%g" % r)


def cell(r):
    if r is None:
        return "-"
    if "value" in r:
        return "%.1f" % r["value"]
    return (r.get("status", "") + ": " + r.get("reason", ""))[:160]


def report(a, results, out):
    """Print and save the tables, the JSON and the plot; return the FAILED cells."""
    at = {(r["figure"], r["system"], r["ratio"]): r for r in results}
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    figures = [f for k in FIGURES for f in FIGURES[k] if any(r["figure"] == f for r in results)]
    val = lambda f, s, q: at.get((f, s, q), {}).get("value")
    lines = []
    for q in a.ratios:
        lines.append("")
        lines.append("== local limit %g %% of %d MiB = %d MiB" %
                     (q, a.working_set, limit_of(a, q) // MIB))
        notes, w = [], 10

        def short(r):
            if r is None or "value" in r:
                return cell(r)
            notes.append("[%d] %s %s: %s" % (len(notes) + 1, r["system"], r["figure"], cell(r)))
            return "%s[%d]" % (r.get("status", "n/a"), len(notes))
        lines.append("%-18s %-7s" % ("figure", "unit") + "".join(" %*s" % (w, s) for s in systems))
        for f in figures:
            lines.append("%-18s %-7s" % (f, UNITS.get(f, "MB/s")) +
                         "".join(" %*s" % (w, short(at.get((f, s, q)))) for s in systems))
        lines += notes
        lines.append("")
        lines.append("ratios (floor = the better of floor-4k and floor-2m for the figure)")
        lines.append("%-18s %-9s %8s %8s %8s %8s" % ("figure", "system", "/local", "/disk",
                                                   "/zram", "/floor"))
        for f in figures:
            fl = [v for v in (val(f, "floor-4k", q), val(f, "floor-2m", q)) if v]
            refs = [val(f, "local", q), val(f, "disk", q), val(f, "zram", q),
                    max(fl) if fl else None]
            for s in systems:
                v = val(f, s, q)
                if s == "local" or v is None:
                    continue
                lines.append("%-18s %-9s" % (f, s) + "".join(
                    " %8s" % ("%.3f" % (v / r) if r else "-") for r in refs))
        lines.append("")
        lines.append("fault latency (us, p50/p99/p999; xmem: memd's, whole run incl. setup; "
                     "floor: its own, measured phase) and memd CPU s per GiB paged")
        for s in systems:
            if not s.startswith(("xmem", "floor")):
                continue
            for k in a.workloads:
                r = at.get((FIGURES[k][0], s, q))
                if not r or "latency_us" not in r:
                    continue
                l = r["latency_us"]
                cpu = r.get("memd_cpu_s_per_gib")
                lines.append("%-9s %-11s %s/%s/%s  faults %s%s" % (
                    s, k, l.get("p50"), l.get("p99"), l.get("p999"), l.get("count"),
                    "  memd %.3f s/GiB (%.2f s, %.0f MiB paged)" % (
                        cpu, r["memd_cpu_s"], r["paged_bytes"] / MIB) if cpu else ""))
    rtt = [r for r in results if r.get("figure") == "tcp_rtt"]
    if rtt:
        lines.append("")
        lines.append("loopback tcp round trip, same run (xmem-tcp's floor: a request, a reply; "
                     "us p50/p99/p999)")
        for r in rtt:
            lines.append("  reply %6d B   %s/%s/%s" % (r["reply_bytes"], r["p50"], r["p99"],
                                                      r["p999"]))
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table.txt"), "w") as f:
        f.write(text)
    cfg = {k: getattr(a, k) for k in ("working_set", "ratios", "only", "workloads", "ops",
                                      "seconds", "redis_requests", "quick", "build", "memd_args")}
    cfg["host"] = os.uname().nodename
    cfg["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"config": cfg, "results": results}, f, indent=1)
    plot(a, at, systems, figures, out)
    return ["%s %s %g%%: %s" % (r["system"], r["figure"], r["ratio"], r.get("reason", ""))
            for r in results if r.get("status") == "FAILED"]


def plot(a, at, systems, figures, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: no plot: matplotlib missing (apt-get install python3-matplotlib)")
        return
    cols = 4
    rows = (len(figures) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for i, f in enumerate(figures):
        ax = axes[i // cols][i % cols]
        for s in systems:
            pts = [(q, at[(f, s, q)]["value"]) for q in a.ratios
                   if "value" in at.get((f, s, q), {})]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s,
                        color="C%d" % SYSTEMS.index(s))
        ax.set_title(f, fontsize=10)
        ax.set_xlabel("local / working set (%)")
        ax.set_ylabel(UNITS.get(f, "MB/s"))
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    for j in range(len(figures), rows * cols):
        axes[j // cols][j % cols].axis("off")
    if figures:
        axes[0][0].legend(fontsize=7)
    fig.suptitle("bench/run: working set %d MiB" % a.working_set)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "plot.png"), dpi=90)
    plt.close(fig)


