#!/usr/bin/env python3
"""Chart of a bench/rollout/run result: failed requests and SIGTERM-to-exit time per variant and D.

Usage: chart.py RESULT.json OUT.png   (needs matplotlib; bench/rollout/run makes a venv with it)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHORT = {
    "naive": "naive app\nno init",
    "graceful": "graceful app\nno init",
    "tini": "tini",
    "dumb-init": "dumb-init",
    "lc-delay15": "lastcall\ndelay 15s",
    "lc-traffic": "lastcall\ntraffic",
    "lc-k8s": "lastcall\nk8s (prop 2s)",
    "lc-k8s-pD": "lastcall\nk8s (prop D)",
    "lc-k8s-traffic": "lastcall\nk8s,traffic",
    "lc-traffic-naive": "naive app\nlastcall traffic",
    "lc-traffic-q5": "lastcall traffic\nquiet 5s",
    "lc-k8s-traffic-p0": "lastcall\nk8s,traffic prop 0",
}
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]


PATTERNS = {"ka": "keep-alive", "sc": "conn/request"}


def by_pattern(data, dst):
    """Runs with --patterns/--runs: one group per pattern x variant, one bar per D; failures summed
    over the runs, exit times over every pod of every run, the bound (D' + quiet period) marked."""
    results, meta = data["results"], data["meta"]
    groups, delays = [], sorted({r["D"] for r in results})
    for r in results:
        g = (r["pattern"], r["rate"], r["variant"])
        if g not in groups:
            groups.append(g)
    cell = {}
    for r in results:
        cell.setdefault((r["pattern"], r["rate"], r["variant"], r["D"]), []).append(r)
    width = 0.8 / len(delays)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(10, 1.3 * len(groups)), 9), sharex=True)
    for j, D in enumerate(delays):
        off = (j - (len(delays) - 1) / 2) * width
        color = COLORS[j % len(COLORS)]
        xs, fails, med, mx, bound = [], [], [], [], []
        for i, g in enumerate(groups):
            rs = cell.get(g + (D,))
            if not rs:
                continue
            pods = [p for r in rs for p in r["pods"]]
            exits = sorted(p["exit_s"] for p in pods)
            qs = sorted(p["quiet_ms"] / 1000 for p in pods if p.get("quiet_ms") is not None)
            prop = 2.0 if g[2] == "lc-k8s-traffic" else 0.0
            xs.append(i + off)
            fails.append(sum(r["failed"] for r in rs))
            med.append(exits[len(exits) // 2])
            mx.append(exits[-1])
            bound.append(max(D, prop) + qs[len(qs) // 2] if qs else None)
        ax1.bar(xs, fails, width, color=color, label="D = %g s" % D)
        for x, y in zip(xs, fails):
            ax1.annotate(str(y), (x, y), ha="center", va="bottom", fontsize=7,
                         color="green" if y == 0 else "black", fontweight="bold" if y == 0 else "normal")
        ax2.bar(xs, med, width, color=color, label="D = %g s" % D)
        ax2.errorbar(xs, med, yerr=[[0] * len(med), [m2 - m1 for m1, m2 in zip(med, mx)]], fmt="none",
                     ecolor="black", elinewidth=0.8, capsize=2)
        for x, b in zip(xs, bound):
            ax2.hlines(D, x - width / 2, x + width / 2, colors="black", linestyles="dashed", linewidth=0.9)
            if b is not None:
                ax2.hlines(b + 0.5, x - width / 2, x + width / 2, colors="red", linestyles="dotted", linewidth=1.2)
    runs = meta["config"].get("runs", 1)
    ax1.set_ylabel("failed requests, sum of %d run(s)" % runs)
    ax1.set_ylim(bottom=0, top=max(1, ax1.get_ylim()[1]))
    extra = ""
    if meta["config"].get("pod_cpu"):
        extra = ", every pod limited to %g CPU" % meta["config"]["pod_cpu"]
    ax1.set_title("Rolling restart of %d pods behind HAProxy (retries off)%s: failed requests"
                  % (meta["config"]["pods"], extra))
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(axis="y", alpha=0.3)
    ax2.set_ylabel("SIGTERM → exit, s (bar: median, whisker: max)")
    ax2.set_title("Time from SIGTERM to exit (dashed: D; dotted red: D' + median quiet period + 0.5 s)")
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(list(range(len(groups))))
    ax2.set_xticklabels(["%s %g/s\n%s" % (PATTERNS.get(m, m), rate, SHORT.get(v, v).replace("\n", " "))
                         for m, rate, v in groups], fontsize=7)
    fig.text(0.01, 0.005, "%s · %s · %s" % (meta["date"], meta["machine"]["cpu"],
                                                   meta["versions"]["lastcall"]), fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    fig.savefig(dst, dpi=110)


def main(src, dst):
    data = json.load(open(src))
    results = data["results"]
    meta = data["meta"]
    if results and "pattern" in results[0]:
        return by_pattern(data, dst)
    variants = []
    for r in results:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    delays = sorted({r["D"] for r in results})
    by = {(r["variant"], r["D"]): r for r in results}
    width = 0.8 / len(delays)
    xs = range(len(variants))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(10, 1.25 * len(variants)), 9), sharex=True)
    for j, D in enumerate(delays):
        off = (j - (len(delays) - 1) / 2) * width
        color = COLORS[j % len(COLORS)]
        fx, fy, ex, em, emax = [], [], [], [], []
        for i, v in enumerate(variants):
            r = by.get((v, D))
            if not r:
                continue
            fx.append(i + off)
            fy.append(r["failed"])
            ex.append(i + off)
            em.append(r["exit_s"]["median"])
            emax.append(r["exit_s"]["max"])
        bars = ax1.bar(fx, [max(y, 0) for y in fy], width, color=color, label="D = %g s" % D)
        for x, y in zip(fx, fy):
            ax1.annotate(str(y), (x, y), ha="center", va="bottom", fontsize=7,
                         color="green" if y == 0 else "black", fontweight="bold" if y == 0 else "normal")
        ax2.bar(ex, em, width, color=color, label="D = %g s" % D)
        ax2.errorbar(ex, em, yerr=[[0] * len(em), [mx - m for m, mx in zip(em, emax)]], fmt="none",
                     ecolor="black", elinewidth=0.8, capsize=2)
        # The target: exit at D (dashed) .. D + 1 s.
        for x in ex:
            ax2.hlines(D, x - width / 2, x + width / 2, colors="black", linestyles="dashed", linewidth=0.9)
        del bars
    ax1.set_yscale("symlog", linthresh=10)
    ax1.set_ylabel("failed requests (of ~%d/s)" % meta["config"]["rate"])
    ax1.set_title("Rolling restart of %d pods behind HAProxy (retries off): failed requests"
                  % meta["config"]["pods"])
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(axis="y", alpha=0.3)
    ax2.set_ylabel("SIGTERM → exit, s (bar: median, whisker: max)")
    ax2.set_title("Time from SIGTERM to exit per pod (dashed: D, when the load balancer drops the pod)")
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels([SHORT.get(v, v) for v in variants], fontsize=8)
    fig.text(0.01, 0.005, "%s · %s · %s" % (meta["date"], meta["machine"]["cpu"],
                                                   meta["versions"]["lastcall"]), fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
