"""Turns the suite's results.json into results.md (a table with ratios against each peer and the
DESIGN §8 targets) and results.png (matplotlib). `python3 bench/report.py [results.json]`
redraws both from a saved run."""
import collections
import json
import os
import sys

CONTENDERS = [("warren", "Warren cold"), ("warren-pooled", "Warren pooled"),
              ("warren-vm", "Warren vm (TCG)"),
              ("podman-crun", "podman/crun"), ("bwrap", "bubblewrap"), ("runsc", "runsc (ptrace)")]
PEERS = ["podman-crun", "bwrap", "runsc"]

# key, label, unit, lower is better, target: (contender, field, op, threshold, text) or None
ROWS = [
    ("create_first", "create → first command done (`run(\"true\")`)", "ms", True,
     ("warren", "p50", "<=", 25, "p50 ≤ 25 ms")),
    ("create", "create (sandbox ready to run commands)", "ms", True,
     ("warren-pooled", "p50", "<=", 5, "pooled p50 ≤ 5 ms")),
    ("first_run", "first `run(\"true\")` after the create returned", "ms", True, None),
    ("cycle", "create → `true` → delete", "ms", True, None),
    ("oneshot", "one-shot CLI: create → `true` → destroy", "ms", True, None),
    ("run_true", "`run(\"true\")` on a running sandbox", "ms", True,
     ("warren", "p50", "<=", 3, "p50 ≤ 3 ms")),
    ("paced_create_first", "paced, 0.3 s of idle before each: create → first `run(\"true\")`",
     "ms", True, None),
    ("paced_run_true", "paced, 0.3 s of idle before each: `run(\"true\")` on a running sandbox",
     "ms", True, None),
    ("pool_gap_paced", "pooled create → first `run(\"true\")` minus `run(\"true\")` on a running "
     "sandbox, both paced", "ms", True, ("warren-pooled", "value", "<=", 2, "issue 16: ≤ 2 ms")),
    ("pool_gap_steady", "paced pooled create → first `run(\"true\")` minus `run(\"true\")` back to "
     "back", "ms", True, None),
    ("fork", "fork ×1 (booted and ready)", "ms", True, None),
    ("fork10", "fork ×10 of a sandbox holding {fork_mib} MiB, one request", "ms", True,
     ("warren", "p50", "<=", 100, "≤ 100 ms")),
    ("fork_disk", "fork: extra pool disk per fork", "MiB", True,
     ("warren", "p50", "<=", 1, "≤ 1 MiB each")),
    ("burst_wall", "burst of {burst} concurrent creates: all ready (Warren cold: {burst_mib} MiB each)", "ms", True,
     ("warren", "value", "<=", 1000, "≤ 1 s")),
    ("burst_each", "burst: each create", "ms", True, None),
    ("burst_errors", "burst: failed creates", "", True, None),
    ("density_held", "idle sandboxes held (asked: Warren {density}, peers {peer_density})", "", False,
     ("warren", "value", ">=", 1000, "≥ 1,000")),
    ("density_mem", "host memory per idle sandbox", "MiB", True,
     ("warren", "value", "<=", 3, "≤ 3 MiB")),
    ("density_pss", "PSS of the sandboxes' host processes per idle sandbox (no kernel memory)", "MiB", True,
     None),
    ("density_cgroup", "memory charged to the sandbox cgroups per idle sandbox (QEMU, virtiofsd, "
     "supervisor; guest RAM it touched)", "MiB", True, None),
    ("density_fds", "daemon file descriptors per idle sandbox", "", True, None),
    ("upload", "upload {file_mib} MiB", "MiB/s", False, None),
    ("download", "download {file_mib} MiB", "MiB/s", False, None),
]


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def headline(stat):
    """The number a ratio is taken on: p50, or the single value."""
    if not stat or "na" in stat:
        return None
    return stat.get("p50", stat.get("value"))


# Figures taken over the whole host, where other work can push a small one below zero.
NOISY = {"density_mem"}


def cell(stat, base, lower_better, peer, noisy=False):
    if stat is None:
        return "–"
    if "na" in stat:
        return f"n/a ({stat['na']})"
    if "p50" in stat:
        text = f"{fmt(stat['p50'])} / {fmt(stat['p99'])}"
    else:
        text = fmt(stat["value"])
        if stat.get("capped"):
            # As many as were asked for: a floor, not a ratio.
            return text + " (all asked)"
    x = headline(stat)
    if noisy and x is not None and x <= 0:
        return "≈ 0 (below the host's noise)"
    if peer and base and x and base > 0:
        ratio = x / base if lower_better else base / x
        text += f" ({ratio:.1f}×)"
    return text


def check(metrics, target):
    if not target:
        return "", ""
    who, field, op, thr, text = target
    stat = metrics.get(who)
    if not stat or "na" in stat or field not in stat:
        return text, "not measured"
    v = stat[field]
    ok = v <= thr if op == "<=" else v >= thr
    if not ok and op == ">=" and stat.get("capped") and stat.get("n", 0) < thr:
        return text, f"not measured (asked for {fmt(stat['n'])})"
    return text, ("met" if ok else "not met") + f" ({fmt(v)})"


def scaling_rows(data):
    sc = data.get("scaling", {})
    levels = sorted({int(level) for c in sc.values() for level in c})
    rows = []
    for level in levels:
        rows.append((f"create → first command with {level:,} live sandboxes", "ms",
                     {c: sc.get(c, {}).get(str(level)) for c, _ in CONTENDERS}))
    growth = {}
    for c, by in sc.items():
        ls = sorted(int(k) for k in by)
        if len(ls) > 1 and "p50" in by[str(ls[0])] and "p50" in by[str(ls[-1])]:
            growth[c] = {"value": by[str(ls[-1])]["p50"] / by[str(ls[0])]["p50"], "top": ls[-1]}
    return rows, growth


def markdown(data):
    m = data["meta"]
    p = m["params"]
    h = m["host"]
    out = [f"# Warren benchmark ({m['mode']} run, {m['date']})", "",
           f"Host: {h['cpus']} CPUs, {h['memory_gib']} GiB, Linux {h['kernel']}, cgroup {h['cgroup']}. "
           f"Warren {m['warren']}; {m['peers']['podman']}, {m['peers']['crun'] or 'crun'}, "
           f"{m['peers']['bwrap']}, {m['peers']['runsc']}.", "",
           *([f"Some contenders' figures were kept from the run of {m['merged_from']} (`--merge`).", ""]
             if m.get("merged_from") else []),
           "Every contender runs on the same root filesystem, the default image's read-only "
           "subvolume (podman with an overlay over it, `--rootfs …:O`; runsc with it as a read-only "
           "OCI root and `/tmp` on tmpfs; bubblewrap `--ro-bind` with `/tmp` on tmpfs). Warren is "
           "timed through the official `langsmith` SDK against `warren serve --network proxied` "
           "(each sandbox gets its veth to the egress proxy); peers run with no network. Peers "
           "have no create API: \"create\" is starting a detached `sleep infinity` sandbox "
           "(`podman run -d`, `runsc run --detach`, bwrap until its shell answers), a command in "
           "it is `podman exec`, `runsc exec`, or `nsenter` into the bwrap sandbox's namespaces.",
           "",
           "bubblewrap is the floor rather than a like-for-like peer: namespaces only, with no "
           "cgroup limits, no network device, no copy-on-write disk, and no daemon or API. Warren "
           "pays for each of those (a cgroup, a veth, a btrfs snapshot with a quota, an agent, the "
           "HTTP round trips of the SDK).",
           "",
           "Cells: p50 / p99 (or a single value). (N×) after a peer's figure is the ratio against "
           "Warren cold: peer ÷ Warren for times and memory, Warren ÷ peer for throughput and "
           "counts; above 1 means Warren is ahead.", "",
           f"Samples: {p['n']} Warren creates, {p['peer_n']} per peer, {p['runs']} Warren "
           f"`run(\"true\")` ({p['peer_runs']} per peer), {p['scale_n']} creates at each live count, "
           f"file throughput p50 of {p['file_reps']}. Density: Warren up to {p['density']} idle "
           f"sandboxes ({p['idle_mib']} MiB limit each, `idle_ttl_seconds=0`), peers up to "
           f"{p['peer_density']}; memory per sandbox is the growth of MemTotal − MemAvailable over "
           "the host (other work on it adds noise).", "",
           *([f"Warren vm (TCG): the vm tier (a QEMU microVM per sandbox, its root the sandbox's "
              f"subvolume over virtio-fs) against `warren serve --default-tier vm --pool-max 0`, "
              f"QEMU under TCG emulation: the runtime always boots with `-accel tcg`, and "
              f"whether this host's KVM runs a guest at all is `warren doctor`'s probe, quoted "
              f"in the notes. "
              f"{p.get('vm_n', '?')} creates, each a cold boot; {p.get('vm_runs', '?')} `run(\"true\")`; "
              f"{p.get('vm_density', '?')} idle VMs of {p.get('vm_mib', '?')} MiB for the memory "
              "rows. No KVM figure is claimed.", ""]
             if any("warren-vm" in by for by in data["metrics"].values()) else [])]
    cols = [label for _, label in CONTENDERS]
    out.append("| metric | " + " | ".join(cols) + " | DESIGN §8 target | Warren |")
    out.append("|---" * (len(cols) + 3) + "|")
    metrics = data["metrics"]
    for key, label, unit, lower, target in ROWS:
        row = metrics.get(key)
        if not row:
            continue
        label = label.format_map(collections.defaultdict(lambda: "?", p))
        base = headline(row.get("warren"))
        cells = [cell(row.get(c), base, lower, c in PEERS, key in NOISY) for c, _ in CONTENDERS]
        ttext, met = check(row, target)
        u = f" ({unit})" if unit else ""
        out.append(f"| {label}{u} | " + " | ".join(cells) + f" | {ttext} | {met} |")
    srows, growth = scaling_rows(data)
    for label, unit, row in srows:
        base = headline(row.get("warren"))
        cells = [cell(row.get(c), base, True, c in PEERS) for c, _ in CONTENDERS]
        out.append(f"| {label} ({unit}) | " + " | ".join(cells) + " | | |")
    if growth:
        cells = []
        for c, _ in CONTENDERS:
            g = growth.get(c)
            cells.append(f"{g['value']:.2f}× at {g['top']:,}" if g else "–")
        w = growth.get("warren")
        met = ""
        if w:
            met = ("met" if w["value"] <= 2 else "not met") + f" ({w['value']:.3f}×)"
            if w["top"] < 1000:
                met += f", only to {w['top']:,}"
        out.append("| create p50 growth, most live vs none | " + " | ".join(cells) +
                   " | ≤ 2× at 1,000 | " + met + " |")
    if data.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(out) + "\n"


def plot(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    colors = {"warren": "#1f77b4", "warren-pooled": "#17becf", "warren-vm": "#ff7f0e",
              "podman-crun": "#d62728",
              "bwrap": "#2ca02c", "runsc": "#9467bd"}
    labels = dict(CONTENDERS)
    for ax, key, title in ((axes[0], "create_first", "create → first command (ms)"),
                           (axes[1], "run_true", "run(\"true\") on a running sandbox (ms)")):
        row = data["metrics"].get(key, {})
        names = [c for c, _ in CONTENDERS if row.get(c) and "p50" in row[c]]
        p50 = [row[c]["p50"] for c in names]
        p99 = [row[c]["p99"] for c in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50", color=[colors[c] for c in names])
        ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99", color=[colors[c] for c in names],
               alpha=0.45)
        for x, v in zip(xs, p50):
            ax.annotate(f"{v:.1f}", (x - 0.2, v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), [labels[c] for c in names], rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_title(title + "\nsolid: p50, light: p99")
        ax.grid(axis="y", alpha=0.3, which="both")
    ax = axes[2]
    for c, by in data.get("scaling", {}).items():
        pts = sorted((int(k), v["p50"]) for k, v in by.items() if "p50" in v)
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", label=labels.get(c, c),
                    color=colors.get(c))
    ax.set_yscale("log")
    ax.set_xlabel("live idle sandboxes")
    ax.set_title("create → first command p50 (ms)\nvs live sandboxes")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    m = data["meta"]
    fig.suptitle(f"Warren vs peers, {m['host']['cpus']} CPUs, Linux {m['host']['kernel']} "
                 f"({m['mode']} run, {m['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data, out):
    md = os.path.join(out, "results.md")
    with open(md, "w") as f:
        f.write(markdown(data))
    png = os.path.join(out, "results.png")
    plot(data, png)
    return md, png


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "results", "results.json")
    with open(src) as f:
        d = json.load(f)
    print(write(d, os.path.dirname(os.path.abspath(src))))
