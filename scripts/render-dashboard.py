"""Plots the Grafana dashboard's main panels from the JSON that the monitoring test
`record_the_dashboard` wrote (each panel's queries over its window, as Prometheus answered them).
Run by scripts/render-dashboard: render-dashboard.py DATA.json OUT.png"""

import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The panels drawn, by title, in reading order.
PANELS = [
    "Leader of each lock",
    "Hand-overs",
    "Losses by cause",
    "Store request latency (p99)",
    "Store requests by result",
    "Remaining validity and failed renewals",
]


def legend(template, labels):
    """Grafana's legend format: {{label}} replaced by the series' label."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def timeline(ax, panel, start, step):
    """Grafana's state timeline: one row per lock and pod, filled while that pod leads it."""
    target = panel["targets"][0]
    rows = sorted(
        target["result"], key=lambda s: (s["metric"].get("lock", ""), s["metric"].get("pod", ""))
    )
    colors = {}
    for row, series in enumerate(rows):
        pod = series["metric"].get("pod", "")
        color = colors.setdefault(pod, f"C{len(colors)}")
        spans = [(float(t) - start, step) for t, _ in series["values"]]
        ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=color)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([legend(target["legend"], s["metric"]) for s in rows], fontsize=8)
    ax.set_title(panel["title"], fontsize=11)
    ax.set_xlabel("seconds into the run", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="x")


def main(data_path, out_path):
    with open(data_path) as f:
        data = json.load(f)
    start = data["start"]
    by_title = {panel["title"]: panel for panel in data["panels"]}
    fig, axes = plt.subplots(3, 2, figsize=(13, 10), constrained_layout=True)
    for ax, title in zip(axes.flat, PANELS):
        panel = by_title[title]
        if title == "Leader of each lock":
            timeline(ax, panel, start, data.get("step", 2.0))
            continue
        for target in panel["targets"]:
            for series in target["result"]:
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                if not points:
                    continue
                xs, ys = zip(*points)
                label = legend(target["legend"], series["metric"])
                ax.plot(xs, ys, linewidth=1.2, label=label)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("seconds into the run", fontsize=8)
        unit = panel.get("unit") or ""
        if unit == "s":
            ax.set_ylabel("seconds", fontsize=8)
        elif unit == "reqps":
            ax.set_ylabel("requests/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
    fig.suptitle(
        "Metaparticle Sync dashboard: two electors on a real kube-apiserver, "
        "API server paused for 20 s in the middle",
        fontsize=12,
    )
    fig.savefig(out_path, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
