#!/usr/bin/python3
"""scalemodel.py: Ember's scale-out model, from the command line (docs/scaling.md).

  scalemodel.py predict  --model resnet50 --hardware dgx1-v100-4x100ib --world 256
  scalemodel.py sweep    --model resnet101 --hardware p100x4-25gbe-roce [--format csv|json]
  scalemodel.py validate [--format text|json|csv|markdown] [--check]
  scalemodel.py validate-measured runs.csv --profile mlp.json [--bucket-mb 4]
  scalemodel.py profile  --model ember_mlp --batch 64 --step-ms 6.0 > mlp.json
  scalemodel.py plot     --out docs/img/scaling-model.png

A model is a built architecture (--model, with the published single-GPU step of --hardware's GPU
or --step-ms/--batch) or a profile JSON (--profile, profiles.py says its format). Exit status:
0 done, 1 a check failed (validate --check), 2 bad input.
"""
import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import alphabeta as ab  # noqa: E402
import profiles  # noqa: E402
import published as pub  # noqa: E402
import validate as val  # noqa: E402

# The GPU family of each hardware preset: which published single-GPU step applies.
FAMILY = {"dgx1-v100-4x100ib": "v100", "v100x8-1x100ib": "v100", "p100x4-25gbe-roce": "p100",
          "p100x4-40gbe-tcp": "p100-40g"}


class UsageError(Exception):
    pass


def add_model_args(ap):
    g = ap.add_argument_group("model")
    g.add_argument("--model", choices=sorted(profiles.ARCHITECTURES), help="a built architecture")
    g.add_argument("--profile", help="a profile JSON instead of --model")
    g.add_argument("--batch", type=int, help="batch per GPU (with --step-ms)")
    g.add_argument("--step-ms", type=float, help="single-GPU step time at --batch, ms")
    h = ap.add_argument_group("hardware (a preset, then overrides)")
    h.add_argument("--hardware", default="dgx1-v100-4x100ib", choices=sorted(pub.HARDWARE))
    h.add_argument("--gpus-per-node", type=int)
    h.add_argument("--inter-gbit", type=float, help="nominal network Gbit/s per node")
    h.add_argument("--intra-gbyte", type=float, help="nominal intra-node GB/s per GPU")
    h.add_argument("--alpha-inter-us", type=float)
    h.add_argument("--alpha-intra-us", type=float)
    s = ap.add_argument_group("step")
    s.add_argument("--bucket-mb", type=float, default=25.0)
    s.add_argument("--algorithm", choices=sorted(ab.ALGORITHMS), default="ring")
    s.add_argument("--rule", choices=["ember", "pytorch"], default="ember",
                   help="bucket formation (default ember: ddp/plan.c)")
    s.add_argument("--no-overlap", action="store_true", help="all-reduce after backward")
    s.add_argument("--grad-bytes", type=int, default=4, help="bytes per gradient element")


def hardware_from(args):
    base = pub.HARDWARE[args.hardware]
    hw = ab.Hardware(base.name, base.gpus_per_node, base.intra_bw, base.intra_alpha,
                     base.inter_bw, base.inter_alpha, base.mem_bw, base.note)
    if args.gpus_per_node is not None:
        if args.gpus_per_node < 1:
            raise UsageError("--gpus-per-node must be >= 1, got %d" % args.gpus_per_node)
        hw.gpus_per_node = args.gpus_per_node
    for opt, attr, scale in (("inter_gbit", "inter_bw", pub.ETA * pub.GBIT),
                             ("intra_gbyte", "intra_bw", pub.ETA * pub.GBYTE),
                             ("alpha_inter_us", "inter_alpha", 1e-6),
                             ("alpha_intra_us", "intra_alpha", 1e-6)):
        v = getattr(args, opt)
        if v is not None:
            if v < 0 or (v == 0 and attr.endswith("bw")):
                raise UsageError("--%s must be %s, got %g" % (opt.replace("_", "-"),
                                 "> 0" if attr.endswith("bw") else ">= 0", v))
            setattr(hw, attr, v * scale)
    return hw


def profile_from(args, hw):
    if args.profile:
        if args.model:
            raise UsageError("give --model or --profile, not both")
        return profiles.load_profile(args.profile)
    if not args.model:
        raise UsageError("give --model NAME or --profile FILE")
    if args.step_ms is not None or args.batch is not None:
        if args.step_ms is None or args.batch is None or args.step_ms <= 0 or args.batch < 1:
            raise UsageError("--step-ms and --batch go together (a step > 0 ms, a batch >= 1)")
        layers = profiles.build(args.model)
        n = sum(l.param_count() for l in layers)
        opt = n * 20 / hw.mem_bw if hw.mem_bw else 0.0
        return profiles.profile_from_arch(args.model, layers, args.batch, args.step_ms / 1e3, opt)
    key = (FAMILY.get(args.hardware), args.model)
    if key not in pub.COMPUTE:
        known = ", ".join("%s on %s" % (m, f) for f, m in sorted(pub.COMPUTE))
        raise UsageError("no published single-GPU step for %s on %s (known: %s): give --step-ms "
                         "and --batch" % (args.model, args.hardware, known))
    return pub.arch_profile(args.model, key[0], hw)


def config_from(args):
    if args.bucket_mb <= 0:
        raise UsageError("--bucket-mb must be > 0, got %g" % args.bucket_mb)
    if args.grad_bytes not in (2, 4, 8):
        raise UsageError("--grad-bytes must be 2, 4 or 8, got %d" % args.grad_bytes)
    return ab.Config(bucket_mb=args.bucket_mb, algorithm=args.algorithm,
                     overlap=not args.no_overlap, grad_bytes=args.grad_bytes, rule=args.rule)


def worlds_upto(limit):
    if limit < 1:
        raise UsageError("--max-world must be >= 1, got %d" % limit)
    return ab.powers_of_two(limit)


TIMES = ("forward_s", "backward_s", "optimizer_s", "comm_s", "exposed_s", "step_s")


def ms(row):
    """The same row with its times (TIMES) in ms."""
    return {(k[:-2] + "_ms" if k in TIMES else k): (1e3 * v if k in TIMES else v)
            for k, v in row.items()}


def write_rows(rows, fmt, out):
    if fmt == "json":
        json.dump(rows, out, indent=1)
        out.write("\n")
        return
    keys = list(rows[0].keys())
    w = csv.DictWriter(out, keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("%.6g" % v if isinstance(v, float) else v) for k, v in r.items()})


def cmd_predict(args):
    hw = hardware_from(args)
    prof, cfg = profile_from(args, hw), config_from(args)
    if args.world < 1:
        raise UsageError("--world must be >= 1, got %d" % args.world)
    r = ms(ab.step(prof, hw, args.world, cfg))
    r["efficiency"] = ab.efficiency(prof, hw, args.world, cfg)
    mb, t = ab.best_bucket(prof, hw, args.world, cfg)
    r.update({"model": prof.name, "params": prof.param_count(), "hardware": hw.name,
              "algorithm": cfg.algorithm, "bucket_mb": cfg.bucket_mb, "best_bucket_mb": mb,
              "best_step_ms": 1e3 * t,
              "comm_bound_at": ab.comm_bound_at(prof, hw, cfg, ab.powers_of_two(1024))})
    if args.format == "json":
        json.dump(r, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        write_rows([r], "csv", sys.stdout)
    return 0


def cmd_sweep(args):
    hw = hardware_from(args)
    prof, cfg = profile_from(args, hw), config_from(args)
    worlds = worlds_upto(args.max_world)
    rows = [ms(r) for r in ab.sweep(prof, hw, cfg, worlds)]
    if args.format == "json":
        json.dump({"model": prof.name, "params": prof.param_count(), "hardware": hw.name,
                   "algorithm": cfg.algorithm, "bucket_mb": cfg.bucket_mb,
                   "comm_bound_at": ab.comm_bound_at(prof, hw, cfg, worlds), "rows": rows},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        write_rows(rows, "csv", sys.stdout)
    return 0


def markdown_validation(rows):
    lines = ["| case | model | GPUs | hardware | published | predicted | error (points) | met |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        pubs = (">= %.2f" if r["at_least"] else "%.3f") % r["published"]
        lines.append("| %s | %s | %d | %s | %s | %.3f | %+.1f | %s |" % (
            r["case"], r["model"], r["world"], r["hardware"], pubs, r["predicted"],
            r["error_points"], "yes" if r["met"] else "**no**"))
    return "\n".join(lines) + "\n"


def cmd_validate(args):
    rows = val.validate_published()
    if args.format == "markdown":
        sys.stdout.write(markdown_validation(rows))
    elif args.format == "text":
        for r in rows:
            print("%-20s %-19s %4d GPUs  published %s%.3f  predicted %.3f  error %+5.1f pts  %s"
                  % (r["case"], r["model"], r["world"], ">=" if r["at_least"] else "  ",
                     r["published"], r["predicted"], r["error_points"],
                     "ok" if r["met"] else "MISSED"))
    else:
        write_rows(rows, args.format, sys.stdout)
    return 1 if args.check and not all(r["met"] for r in rows) else 0


def cmd_validate_measured(args):
    rows = val.validate_measured(args.csv, profile=args.profile, bucket_mb=args.bucket_mb,
                                 overlap=not args.no_overlap, algorithm=args.algorithm,
                                 intra_gbyte=args.intra_gbyte,
                                 alpha_inter=args.alpha_inter_us * 1e-6,
                                 alpha_intra=args.alpha_intra_us * 1e-6,
                                 unshaped_gbit=args.unshaped_gbit)
    write_rows(rows, args.format, sys.stdout)
    errs = [abs(r["error_pct"]) for r in rows if r["error_pct"] is not None]
    if errs:
        sys.stderr.write("validate-measured: %d rows, |error| mean %.1f%%, max %.1f%%\n" %
                         (len(errs), sum(errs) / len(errs), max(errs)))
    return 0


def cmd_profile(args):
    hw = hardware_from(args)
    prof = profile_from(args, hw)
    json.dump(prof.to_json(), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


# The curves in docs/scaling.md: (label, model, hardware, config).
PLOT_CURVES = [
    ("ResNet-50, DGX-1 V100, 4x100G IB, ring", "resnet50", "dgx1-v100-4x100ib", pub.DDP),
    ("ResNet-50, 8xV100, 1x100G IB, ring", "resnet50", "v100x8-1x100ib", pub.DDP),
    ("ResNet-101, 4xP100, 25G RoCE, ring", "resnet101", "p100x4-25gbe-roce", pub.HOROVOD),
    ("ResNet-101, 4xP100, 25G RoCE, hierarchical", "resnet101", "p100x4-25gbe-roce",
     pub.HOROVOD.but(algorithm="hierarchical")),
    ("Inception V3, 4xP100, 25G RoCE, ring", "inception_v3_noaux", "p100x4-25gbe-roce",
     pub.HOROVOD),
    ("VGG-16, 4xP100, 25G RoCE, ring", "vgg16", "p100x4-25gbe-roce", pub.HOROVOD),
]


def curves(max_world=1024):
    """Efficiency by world size for every curve: (worlds, [(label, [eff...], best_mb, bound)])."""
    worlds = ab.powers_of_two(max_world)
    out = []
    for label, model, hwname, cfg in PLOT_CURVES:
        hw = pub.HARDWARE[hwname]
        prof = pub.arch_profile(model, FAMILY[hwname], hw)
        rows = ab.sweep(prof, hw, cfg, worlds)
        out.append((label, [r["efficiency"] for r in rows], rows[-1]["best_bucket_mb"],
                    ab.comm_bound_at(prof, hw, cfg, worlds)))
    return worlds, out


def cmd_plot(args):
    worlds, cs = curves(args.max_world)
    table = io.StringIO()
    table.write("| GPUs | " + " | ".join(c[0] for c in cs) + " |\n")
    table.write("| ---: |" + " ---: |" * len(cs) + "\n")
    for i, p in enumerate(worlds):
        table.write("| %d | " % p + " | ".join("%.3f" % c[1][i] for c in cs) + " |\n")
    table.write("| best bucket (MB) at %d | " % worlds[-1] +
                " | ".join("%g" % c[2] for c in cs) + " |\n")
    table.write("| comm-bound from | " + " | ".join(str(c[3] or "-") for c in cs) + " |\n")
    sys.stdout.write(table.getvalue())
    if not args.out:
        return 0
    gp = shutil.which("gnuplot")
    if not gp:
        raise UsageError("gnuplot not found (Debian package gnuplot-nox)")
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "eff.dat")
        with open(data, "w") as f:
            for i, p in enumerate(worlds):
                f.write("%d %s\n" % (p, " ".join("%.5f" % c[1][i] for c in cs)))
        plots = ", ".join("'%s' using 1:%d with linespoints title '%s'" % (data, k + 2, c[0])
                          for k, c in enumerate(cs))
        script = ("set terminal pngcairo size 1000,620 font 'sans,10'\n"
                  "set output '%s'\nset logscale x 2\nset xrange [1:%d]\nset yrange [0.5:1.02]\n"
                  "set xlabel 'GPUs'\nset ylabel 'predicted weak-scaling efficiency'\n"
                  "set key bottom left\nset grid\nplot %s\n" % (args.out, worlds[-1], plots))
        r = subprocess.run([gp], input=script, text=True, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise UsageError("gnuplot failed: %s" % r.stderr.strip())
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scalemodel.py", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("predict", help="one world size")
    add_model_args(p)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.set_defaults(fn=cmd_predict)
    p = sub.add_parser("sweep", help="world sizes 1, 2, 4, ... --max-world")
    add_model_args(p)
    p.add_argument("--max-world", type=int, default=1024)
    p.add_argument("--format", choices=["json", "csv"], default="csv")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("validate", help="against published results")
    p.add_argument("--format", choices=["text", "json", "csv", "markdown"], default="text")
    p.add_argument("--check", action="store_true", help="exit 1 when a case misses its target")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("validate-measured", help="against Ember's measured step times",
                       description=val.MEASURED_DOC,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--profile", help="profile JSON for rows without a profile column")
    p.add_argument("--bucket-mb", type=float, default=4.0)
    p.add_argument("--no-overlap", action="store_true")
    p.add_argument("--algorithm", choices=["auto"] + sorted(ab.ALGORITHMS), default="auto")
    p.add_argument("--intra-gbyte", type=float, default=2.2,
                   help="node-shared-memory all-reduce rate, GB/s (measured, used as is)")
    p.add_argument("--alpha-inter-us", type=float, default=pub.ALPHA_TCP * 1e6)
    p.add_argument("--alpha-intra-us", type=float, default=pub.ALPHA_INTRA * 1e6)
    p.add_argument("--unshaped-gbit", type=float, default=8.0,
                   help="rate of an unshaped veth link (link_gbit 0 or empty)")
    p.add_argument("--format", choices=["json", "csv"], default="csv")
    p.set_defaults(fn=cmd_validate_measured)
    p = sub.add_parser("profile", help="write a profile JSON of a built architecture")
    add_model_args(p)
    p.set_defaults(fn=cmd_profile)
    p = sub.add_parser("plot", help="efficiency curves (markdown table; PNG with --out)")
    p.add_argument("--out", help="PNG path (gnuplot, pngcairo)")
    p.add_argument("--max-world", type=int, default=1024)
    p.set_defaults(fn=cmd_plot)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (UsageError, profiles.ProfileError, val.MeasuredError, ValueError) as e:
        sys.stderr.write("scalemodel.py %s: %s\n" % (args.cmd, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
