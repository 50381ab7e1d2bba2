#!/usr/bin/python3
"""summarize.py: turns a sweep's rows (cluster/scaling/sweep.sh: rows.csv, one line per run) into
medians, efficiencies, tables and plots (docs/scaling.md).

    summarize.py DIR          reads DIR/rows.csv (or summarize.py FILE.csv: that file; the Slurm
                              sweep's sweep.csv too), writes into DIR (FILE's directory):
      summary.csv   one line per configuration: medians over its rounds of samples/s, step time,
                    all-reduce time, exposed and hidden all-reduce, overlap fraction; efficiency
      tables.md     the tables docs/scaling.md shows
      measured_MODEL.csv  the netns medians of each model in the scale-out model's
                    validate-measured format (cluster/model/scalemodel.py validate-measured)
      *.png         throughput vs ranks, efficiency vs link rate, overlap on vs off, bucket size,
                    compression (gnuplot, pngcairo)

Efficiency is samples/s over (world x the 1-rank median of the same machine, model and threads,
launched the same way (a Slurm sweep's own 1 rank), else locally): at the same per-rank batch (weak scaling) or with the 1 rank taking the whole global
batch (strong scaling). Rows of different machines (cpu_model, cores) are never compared: a
configuration's key includes them, and each baseline is looked up on the row's own machine.
"""
import csv
import os
import statistics
import subprocess
import sys

KEY = ("cpu_model", "cores", "launcher", "setting", "nodes", "world", "ranks_per_node",
       "oversubscribed", "link", "model", "batch", "threads", "bucket_mb", "compress", "overlap",
       "global_batch", "scaling")
MEDIANS = ("samples_per_s", "step_ms", "comm_ms", "comm_exposed_ms", "overlap_frac")


class SweepError(Exception):
    pass


def read_rows(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise SweepError("%s: %s" % (path, e.strerror))
    if not rows:
        raise SweepError("%s: no rows (did every run fail? see runs.log next to it)" % path)
    for r in rows:  # rows of other sweeps (the Slurm array's) lack the local sweep's last columns
        r.setdefault("round", "1")
        r.setdefault("scaling", "weak")
        if not r.get("global_batch"):
            r["global_batch"] = str(float(r.get("batch") or 0) * float(r.get("world") or 0))
    missing = [k for k in KEY + MEDIANS if k not in rows[0]]
    if missing:
        raise SweepError("%s: missing columns %s" % (path, ", ".join(missing)))
    for i, r in enumerate(rows, 2):
        for k in MEDIANS + ("world", "batch", "global_batch", "threads"):
            try:
                r[k] = float(r[k])
            except ValueError:
                raise SweepError("%s:%d: %s is %r, not a number" % (path, i, k, r[k]))
    return rows


def summarize(rows):
    """One dict per configuration (KEY), with medians, rounds, hidden_ms and efficiency."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in KEY), []).append(r)
    out = []
    for key, rs in groups.items():
        s = dict(zip(KEY, key))
        for k in MEDIANS:
            s[k] = statistics.median(r[k] for r in rs)
        s["rounds"] = len(rs)
        s["buckets"] = rs[0].get("buckets", "")
        s["hidden_ms"] = statistics.median(r["comm_ms"] - r["comm_exposed_ms"] for r in rs)
        out.append(s)
    base = {}  # (launcher, machine, model, threads, batch) -> the 1-rank median
    for s in out:
        if s["world"] == 1:
            base[(s["launcher"], s["cpu_model"], s["cores"], s["model"], s["threads"],
                  s["batch"])] = s["samples_per_s"]
    for s in out:  # the 1 rank of the same launcher (a Slurm sweep's), else the local one
        b = s["global_batch"] if s["scaling"] == "strong" else s["batch"]
        k = (s["cpu_model"], s["cores"], s["model"], s["threads"], b)
        one = base.get((s["launcher"],) + k) or base.get(("local",) + k)
        s["efficiency"] = s["samples_per_s"] / (s["world"] * one) if one else None
    order = {"local": 0, "netns": 1}
    out.sort(key=lambda s: (s["cpu_model"], order.get(s["launcher"], 2), s["model"],
                            ("bucket", "compress").index(s["setting"]) + 1
                            if s["setting"] in ("bucket", "compress") else 0, s["nodes"],
                            s["world"], s["overlap"], rate_gbit(s["link"]),
                            float(s["bucket_mb"] or 0), s["compress"]))
    return out


def rate_gbit(link):
    """'1gbit' -> 1.0, '500mbit' -> 0.5; 'none' (unshaped) -> 0."""
    if link in ("", "none"):
        return 0.0
    for unit, scale in (("gbit", 1.0), ("mbit", 1e-3), ("kbit", 1e-6)):
        if link.endswith(unit):
            return float(link[:-len(unit)]) * scale
    raise SweepError("link rate %r is not none or e.g. 5gbit" % link)


def fmt(v, digits=1):
    return "" if v is None else ("%.*f" % (digits, v))


def cell(v):
    """A CSV cell: whole numbers as integers (world 2, not 2.0000), others to 4 places."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "%d" % v if v.is_integer() else "%.4f" % v
    return v


def write_summary(out, path):
    cols = list(KEY) + ["rounds", "buckets"] + list(MEDIANS) + ["hidden_ms", "efficiency"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for s in out:
            w.writerow([cell(s[c]) for c in cols])


def layout(s):
    return "%dx%d" % (int(float(s["nodes"])), int(float(s["ranks_per_node"])))


def tables(out):
    """docs/scaling.md's tables, as markdown."""
    lines = []
    machines = sorted({(s["cpu_model"], s["cores"]) for s in out})
    for cpu, cores in machines:
        lines.append("Machine: %s, %s cores. Medians of %d round(s) per configuration.\n" %
                     (cpu, cores, max(s["rounds"] for s in out)))
    loc = [s for s in out if s["launcher"] != "netns" and s["setting"] not in ("bucket",
                                                                              "compress")]
    if loc:
        lines += ["### Throughput against ranks (mpirun on one node; Slurm jobs)", "",
                  "| launcher | model | nodes x ranks | overlap | oversubscribed | samples/s | step ms "
                  "| all-reduce ms | exposed ms | hidden fraction | efficiency |",
                  "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in loc:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s["launcher"], s["model"], layout(s), s["overlap"],
                "yes" if s["oversubscribed"] == "1" else "no",
                fmt(s["samples_per_s"]), fmt(s["step_ms"], 2), fmt(s["comm_ms"], 2),
                fmt(s["comm_exposed_ms"], 2), fmt(s["overlap_frac"], 2), fmt(s["efficiency"], 2)))
        lines.append("")
    for setting, what, col in (("bucket", "bucket size (MB)", "bucket_mb"),
                               ("compress", "gradient compression", "compress")):
        part = [s for s in out if s["setting"] == setting]
        if not part:
            continue
        part.sort(key=lambda s: float(s[col]) if col == "bucket_mb" else
                  ("none", "bf16", "fp16").index(s[col]) if s[col] in ("none", "bf16", "fp16")
                  else 9)
        lines += ["### 2 ranks: %s" % what, "",
                  "| %s | buckets | samples/s | step ms | all-reduce ms | efficiency |" % what,
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for s in part:
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                s[col], s.get("buckets", ""), fmt(s["samples_per_s"]), fmt(s["step_ms"], 2),
                fmt(s["comm_ms"], 2), fmt(s["efficiency"], 2)))
        lines.append("")
    net = [s for s in out if s["launcher"] == "netns"]
    if net:
        lines += ["### Network-namespace nodes: overlap on against off, per link rate", "",
                  "Gain: step time with overlap off less with it on. Hidden: the all-reduce time "
                  "that ran behind backward with overlap on (all-reduce less exposed).", "",
                  "| model | nodes x ranks | link | samples/s off | samples/s on | step ms off | "
                  "step ms on | gain ms | all-reduce ms (on) | hidden ms (on) | hidden fraction "
                  "| efficiency off | efficiency on |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| ---: |"]
        pairs = {}
        for s in net:
            pairs.setdefault((s["model"], layout(s), s["link"]), {})[s["overlap"]] = s
        for (model, lay, link), p in sorted(pairs.items(), key=lambda kv: (
                kv[0][0], kv[0][1], -rate_gbit(kv[0][2]) if kv[0][2] != "none" else -1e9)):
            off, on = p.get("no"), p.get("yes")
            g = lambda s, k, d=1: fmt(s[k], d) if s else ""
            gain = off["step_ms"] - on["step_ms"] if off and on else None
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                model, lay, link, g(off, "samples_per_s"), g(on, "samples_per_s"),
                g(off, "step_ms", 2), g(on, "step_ms", 2), fmt(gain, 2), g(on, "comm_ms", 2),
                g(on, "hidden_ms", 2), g(on, "overlap_frac", 2), g(off, "efficiency", 2),
                g(on, "efficiency", 2)))
        lines.append("")
    return "\n".join(lines)


def write_measured(out, d):
    """The netns medians as validate-measured's CSV (cluster/model/scalemodel.py), one file per
    model (measured_MODEL.csv); returns the files written."""
    made = []
    for model in sorted({s["model"] for s in out if s["launcher"] == "netns"}):
        made.append("measured_%s.csv" % model)
        with open(os.path.join(d, made[-1]), "w", newline="") as f:
            write_measured_rows([s for s in out if s["model"] == model], f)
    return made


def write_measured_rows(out, f):
    w = csv.writer(f)
    w.writerow(["nodes", "ranks_per_node", "link_gbit", "step_ms", "bucket_mb", "overlap",
                "model", "batch"])
    for s in out:
        if s["launcher"] == "netns":
            w.writerow([int(float(s["nodes"])), int(float(s["ranks_per_node"])),
                        rate_gbit(s["link"]), "%.3f" % s["step_ms"], s["bucket_mb"],
                        1 if s["overlap"] == "yes" else 0, s["model"], int(s["batch"])])


def dat(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(" ".join(str(x) for x in r) + "\n")


def plots(out, d):
    """PNG plots with gnuplot; returns the files written (none without gnuplot)."""
    script, made = ["set terminal pngcairo size 900,560 font ',11'", "set grid",
                    "set key outside right top"], []

    def plot(name, title, xl, yl, series, extra=()):
        if not series:
            return
        script.extend(["set output '%s/%s.png'" % (d, name), "set title '%s'" % title,
                       "set xlabel '%s'" % xl, "set ylabel '%s'" % yl, *extra,
                       "plot " + ", ".join(series), "unset logscale", "set xtics autofreq",
                       "set yrange [*:*]"])
        made.append("%s.png" % name)

    # throughput against ranks, per model: one node, and each netns link rate
    for model in sorted({s["model"] for s in out}):
        series = []
        groups = sorted({(s["launcher"], s["nodes"]) for s in out if s["model"] == model and
                         s["launcher"] != "netns" and s["setting"] not in ("bucket", "compress")})
        for launcher, nodes in groups:
            for ov in ("no", "yes"):  # the 1-rank point starts both lines
                pts = sorted({(s["world"], s["samples_per_s"]) for s in out
                              if s["model"] == model and s["launcher"] == launcher and
                              s["setting"] not in ("bucket", "compress") and
                              (s["nodes"] == nodes and s["overlap"] == ov or s["world"] == 1)})
                if len(pts) > 1:
                    f = "%s/thr_%s_%s_%s_%s.dat" % (d, model, launcher, nodes, ov)
                    dat(f, pts)
                    where = "one node" if nodes == "1" else "%s nodes" % nodes
                    series.append("'%s' using 1:2 with linespoints title '%s %s, overlap %s'" %
                                  (f, launcher, where, "on" if ov == "yes" else "off"))
        for link in sorted({s["link"] for s in out if s["launcher"] == "netns"}, key=rate_gbit):
            for ov in ("no", "yes"):
                pts = sorted(((s["world"], s["samples_per_s"]) for s in out if s["model"] == model
                              and s["launcher"] == "netns" and s["link"] == link and
                              s["overlap"] == ov and s["ranks_per_node"] in ("1", 1.0, "1.0")))
                if pts:
                    f = "%s/thr_%s_%s_%s.dat" % (d, model, link, ov)
                    dat(f, pts)
                    series.append("'%s' using 1:2 with linespoints title 'netns nodes, %s, overlap "
                                  "%s'" % (f, link, "on" if ov == "yes" else "off"))
        one = [s for s in out if s["model"] == model and s["launcher"] == "local" and
               s["world"] == 1 and s["scaling"] == "weak"]
        top = max((s["world"] for s in out if s["model"] == model), default=1)
        if one and top > 1:
            f = "%s/thr_%s_ideal.dat" % (d, model)
            dat(f, [(1, one[0]["samples_per_s"]), (top, top * one[0]["samples_per_s"])])
            series.append("'%s' using 1:2 with lines dashtype 2 lc 'gray' title 'linear (ideal)'"
                          % f)
        plot("throughput_%s" % model, "%s: global samples/s against ranks" % model, "ranks",
             "samples/s", series, ["set xtics 1"])
    # efficiency against link rate (netns)
    net = [s for s in out if s["launcher"] == "netns" and s["efficiency"] is not None]
    series = []
    links = sorted({s["link"] for s in net}, key=lambda l: rate_gbit(l) or 1e9)
    for model in sorted({s["model"] for s in net}):
        for lay in sorted({layout(s) for s in net}):
            for ov in ("no", "yes"):
                pts = [(i, s["efficiency"]) for i, l in enumerate(links) for s in net
                       if s["model"] == model and layout(s) == lay and s["overlap"] == ov and
                       s["link"] == l]
                if pts:
                    f = "%s/eff_%s_%s_%s.dat" % (d, model, lay, ov)
                    dat(f, pts)
                    series.append("'%s' using 1:2 with linespoints title '%s %s, overlap %s'" %
                                  (f, model, lay, "on" if ov == "yes" else "off"))
    xt = "set xtics (%s)" % ", ".join("'%s' %d" % ("unshaped" if l == "none" else l, i)
                                       for i, l in enumerate(links))
    plot("efficiency_vs_link", "scaling efficiency against link rate (network-namespace nodes)",
         "link rate", "efficiency", series, [xt, "set yrange [0:*]"])
    # overlap on against off: step time per netns configuration
    pairs = {}
    for s in out:
        if s["launcher"] == "netns":
            pairs.setdefault((s["model"], layout(s), s["link"]), {})[s["overlap"]] = s
    keys = sorted((k for k, p in pairs.items() if "no" in p and "yes" in p),
                  key=lambda k: (k[0], k[1], rate_gbit(k[2]) or 1e9))
    if keys:
        f = "%s/overlap.dat" % d
        with open(f, "w") as h:
            for m, lay, link in keys:
                p = pairs[(m, lay, link)]
                h.write('"%s %s %s" %.3f %.3f %.3f\n' % (m, lay, "unshaped" if link == "none" else
                                                          link, p["no"]["step_ms"],
                                                          p["yes"]["step_ms"],
                                                          p["yes"]["hidden_ms"]))
        plot("overlap", "step time, all-reduce after backward against overlapped", "", "ms",
             ["'%s' using 2:xtic(1) title 'overlap off'" % f, "'' using 3 title 'overlap on'",
              "'' using 4 title 'hidden all-reduce (on)'"],
             ["set style data histograms", "set style fill solid 0.8 border -1",
              "set xtics rotate by -35"])
        script.append("set style data lines")
    # bucket size and compression (2 ranks, one node)
    pts = sorted((float(s["bucket_mb"]), s["samples_per_s"]) for s in out
                 if s["setting"] == "bucket")
    if pts:
        f = "%s/bucket.dat" % d
        dat(f, pts)
        plot("bucket", "2 ranks: samples/s against bucket size", "bucket MB", "samples/s",
             ["'%s' using 1:2 with linespoints title 'mlp'" % f], ["set logscale x 2"])
    comp = [s for s in out if s["setting"] == "compress"]
    if comp:
        f = "%s/compress.dat" % d
        with open(f, "w") as h:
            for s in comp:
                h.write("%s %.1f\n" % (s["compress"], s["samples_per_s"]))
        plot("compress", "2 ranks: samples/s with gradient compression", "", "samples/s",
             ["'%s' using 2:xtic(1) title 'mlp'" % f],
             ["set style data histograms", "set style fill solid 0.8 border -1",
              "set yrange [0:*]"])
    try:
        subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True,
                       timeout=120)
    except FileNotFoundError:
        print("summarize: gnuplot not found (apt-get install gnuplot-nox): no plots",
              file=sys.stderr)
        return []
    return made


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: summarize.py SWEEP_DIR | ROWS.csv  (reads SWEEP_DIR/rows.csv)",
              file=sys.stderr)
        return 2
    path = argv[1]
    if os.path.isdir(path):
        path = os.path.join(path, "rows.csv")
    d = os.path.dirname(os.path.abspath(path))
    try:
        out = summarize(read_rows(path))
    except SweepError as e:
        print("summarize: %s" % e, file=sys.stderr)
        return 1
    write_summary(out, os.path.join(d, "summary.csv"))
    measured = write_measured(out, d)
    md = tables(out)
    with open(os.path.join(d, "tables.md"), "w") as f:
        f.write(md + "\n")
    made = plots(out, d)
    print(md)
    print("summarize: wrote summary.csv, tables.md%s in %s" %
          ("".join(", " + m for m in measured + made), d), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
