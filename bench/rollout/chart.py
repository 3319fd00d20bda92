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
}
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]


def main(src, dst):
    data = json.load(open(src))
    results = data["results"]
    meta = data["meta"]
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
