"""validate.py: the model against published results (published.CASES) and against Ember's own
measured step times (a CSV, see MEASURED_DOC)."""
import csv

import alphabeta as ab
import profiles
import published as pub


def validate_published(cases=None):
    """One row per case: published and predicted efficiency, the error in points (predicted -
    published, x100) and whether it meets the target (within 10 points; for a lower bound, at
    least the bound)."""
    rows = []
    for c in cases or pub.CASES:
        hw = pub.HARDWARE[c.hardware]
        prof = pub.arch_profile(c.model, c.family, hw)
        r = ab.step(prof, hw, c.world, c.cfg)
        one = ab.step(prof, hw, 1, c.cfg)["step_s"]
        eff = one / r["step_s"]
        err = eff - c.published
        ok = eff >= c.published if c.at_least else abs(err) <= pub.TARGET_POINTS
        rows.append({"case": c.key, "source": c.source, "model": c.model, "hardware": c.hardware,
                     "world": c.world, "bucket_mb": c.cfg.bucket_mb, "algorithm": c.cfg.algorithm,
                     "published": c.published, "at_least": c.at_least, "predicted": eff,
                     "error_points": 100 * err, "met": ok, "step_ms": 1e3 * r["step_s"],
                     "comm_ms": 1e3 * r["comm_s"], "exposed_ms": 1e3 * r["exposed_s"],
                     "note": c.note})
    return rows


MEASURED_DOC = """Measured CSV (validate-measured): one header line, one row per run, commas.
Required columns:
  nodes            number of netns "nodes" (>= 1)
  ranks_per_node   ranks on each node (>= 1)
  link_gbit        the per-node link rate in Gbit/s (the tbf rate; 0 or empty: unshaped, use
                   --unshaped-gbit)
  step_ms          measured mean step time in ms (forward + backward + all-reduce + optimizer)
Optional columns (else the command-line value):
  profile          path of a profile JSON (per-layer backward times measured on one rank)
  bucket_mb        Ember's bucket cap (EMBER_DDP_BUCKET_MB)
  overlap          1 or 0
  algorithm        ring | hierarchical | auto (auto: hierarchical when ranks_per_node >= 2 and
                   nodes >= 2, as Ember's collectives choose; else ring)
Any other columns are carried through to the output unchanged."""

REQUIRED = ("nodes", "ranks_per_node", "link_gbit", "step_ms")


class MeasuredError(ValueError):
    pass


def _field(row, key, line, conv, minimum=None):
    v = row.get(key)
    if v is None or v.strip() == "":
        raise MeasuredError("line %d: column %s is empty" % (line, key))
    try:
        x = conv(v)
    except ValueError:
        raise MeasuredError("line %d: column %s: %r is not a number" % (line, key, v))
    if minimum is not None and x < minimum:
        raise MeasuredError("line %d: column %s must be >= %g, got %r" % (line, key, minimum, v))
    return x


def netns_hardware(ranks_per_node, link_gbit, intra_gbyte, alpha_inter, alpha_intra):
    """A netns "node": the node's one veth link, shaped to link_gbit (ETA of it achieved, as for
    every network in the model), and node-shared memory inside the node at intra_gbyte GB/s
    (a measured rate, used as is)."""
    return ab.Hardware("netns", ranks_per_node, intra_gbyte * pub.GBYTE, alpha_intra,
                       pub.ETA * link_gbit * pub.GBIT, alpha_inter)


def validate_measured(path, profile=None, bucket_mb=4.0, overlap=True, algorithm="auto",
                      intra_gbyte=2.2, alpha_inter=pub.ALPHA_TCP, alpha_intra=pub.ALPHA_INTRA,
                      unshaped_gbit=8.0):
    """Predicted against measured step time for every row of the CSV at `path`."""
    try:
        f = open(path, newline="")
    except OSError as e:
        raise MeasuredError("measured CSV %s: %s" % (path, e.strerror))
    with f:
        rd = csv.DictReader(f)
        missing = [k for k in REQUIRED if k not in (rd.fieldnames or [])]
        if missing:
            raise MeasuredError("measured CSV %s: missing column(s) %s (need %s)" %
                                (path, ", ".join(missing), ", ".join(REQUIRED)))
        rows = list(rd)
    if not rows:
        raise MeasuredError("measured CSV %s: no rows" % path)
    cache, out = {}, []
    for i, row in enumerate(rows, start=2):
        nodes = _field(row, "nodes", i, int, 1)
        g = _field(row, "ranks_per_node", i, int, 1)
        link = row.get("link_gbit", "").strip()
        link = _field(row, "link_gbit", i, float, 0) if link else 0.0
        measured = _field(row, "step_ms", i, float, 0)
        ppath = (row.get("profile") or "").strip() or profile
        if not ppath:
            raise MeasuredError("line %d: no profile (give a profile column or --profile)" % i)
        if ppath not in cache:
            cache[ppath] = profiles.load_profile(ppath)
        prof = cache[ppath]
        mb = _field(row, "bucket_mb", i, float, 0) if (row.get("bucket_mb") or "").strip() \
            else bucket_mb
        ov = overlap
        if (row.get("overlap") or "").strip():
            ov = row["overlap"].strip() not in ("0", "false", "off", "no")
        algo = (row.get("algorithm") or "").strip() or algorithm
        if algo == "auto":
            algo = "hierarchical" if (g >= 2 and nodes >= 2) else "ring"
        hw = netns_hardware(g, link if link > 0 else unshaped_gbit, intra_gbyte, alpha_inter,
                            alpha_intra)
        cfg = ab.Config(bucket_mb=mb, algorithm=algo, overlap=ov, align=16)
        r = ab.step(prof, hw, nodes * g, cfg)
        pred = 1e3 * r["step_s"]
        res = dict(row)
        res.update({"world": nodes * g, "algorithm": algo, "predicted_ms": pred,
                    "measured_ms": measured, "comm_ms": 1e3 * r["comm_s"],
                    "exposed_ms": 1e3 * r["exposed_s"],
                    "error_pct": 100.0 * (pred - measured) / measured if measured else None})
        out.append(res)
    return out
