"""test_model.py: the scale-out model's tests (ctest model_*). Oracles: torchvision's published
parameter and multiply-add counts, all-reduce times and step schedules worked by hand, Ember's
documented bucket count, and the published scaling results."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import alphabeta as ab  # noqa: E402
import profiles  # noqa: E402
import published as pub  # noqa: E402
import validate as val  # noqa: E402

SCRIPT = os.path.join(HERE, "scalemodel.py")
MB = 1048576


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                          timeout=120)


def toy_profile(backward=(0.010, 0.020, 0.030), params=((1000,), (2000,), (4000,)),
                forward=0.015, opt=0.001):
    layers = [profiles.Layer("l%d" % i, ps, backward_s=b)
              for i, (ps, b) in enumerate(zip(params, backward))]
    return profiles.Profile("toy", 8, layers, forward, opt)


class Architectures(unittest.TestCase):
    # torchvision's model documentation: parameters and GFLOPS (= billions of multiply-adds).
    PUBLISHED = {"resnet50": (25557032, 4.09), "resnet101": (44549160, 7.80),
                 "inception_v3": (27161264, 5.71), "vgg16": (138357544, 15.47)}

    def test_parameter_totals_equal_torchvision(self):
        for name, (params, _) in self.PUBLISHED.items():
            with self.subTest(name):
                self.assertEqual(sum(l.param_count() for l in profiles.build(name)), params)

    def test_multiply_adds_match_torchvision(self):
        for name, (_, gmacs) in self.PUBLISHED.items():
            with self.subTest(name):
                macs = sum(l.flops for l in profiles.build(name)) / 2e9
                self.assertAlmostEqual(macs, gmacs, delta=0.01 * gmacs)

    def test_inception_without_aux_drops_exactly_the_aux_head(self):
        # conv0 768->128 1x1 + BN, conv1 128->768 5x5 + BN, fc 768->1000
        aux = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
        full = sum(l.param_count() for l in profiles.build("inception_v3"))
        noaux = sum(l.param_count() for l in profiles.build("inception_v3_noaux"))
        self.assertEqual(full - noaux, aux)

    def test_ember_zoo_shapes(self):
        mlp = profiles.build("ember_mlp")
        self.assertEqual([l.params for l in mlp],
                         [[1024 * 784, 1024], [1024 * 1024, 1024], [10 * 1024, 10]])
        cnn = profiles.build("ember_small_cnn")
        self.assertEqual([l.params for l in cnn],
                         [[32 * 25, 32], [64 * 32 * 25, 64], [1024 * 64 * 7 * 7, 1024],
                          [10 * 1024, 10]])
        # conv2 on the 14x14 map: 64 * 32 * 25 multiply-adds per output pixel
        self.assertEqual(cnn[1].flops, 2.0 * 64 * 32 * 25 * 14 * 14)

    def test_profile_from_arch_splits_the_step(self):
        layers = profiles.build("resnet50")
        p = profiles.profile_from_arch("r50", layers, 32, 0.097, 0.001)
        self.assertAlmostEqual(p.forward_s, 0.096 / 3)
        self.assertAlmostEqual(p.backward_s(), 0.096 * 2 / 3)
        fc = p.layers[-1]
        self.assertAlmostEqual(fc.backward_s / p.backward_s(),
                               fc.flops / sum(l.flops for l in layers))


class AllReduce(unittest.TestCase):
    def hw(self, g=4, intra=10e9, ai=2e-6, inter=1e9, ax=20e-6):
        return ab.Hardware("t", g, intra, ai, inter, ax)

    def test_ring_single_node(self):
        # p = 4 on one node: 2*3 hops of 2 us, 2*3/4 of 8 MB at 10 GB/s
        self.assertAlmostEqual(ab.allreduce_ring(8e6, 4, self.hw()), 6 * 2e-6 + 1.5 * 8e6 / 10e9)

    def test_ring_across_nodes_takes_the_slow_link(self):
        # p = 8, 2 nodes: 14 hops of 20 us, 14/8 of 8 MB at 1 GB/s
        self.assertAlmostEqual(ab.allreduce_ring(8e6, 8, self.hw()), 14 * 20e-6 + 1.75 * 8e-3)

    def test_hierarchical_by_hand(self):
        # p = 8 = 2 nodes x 4: RS + AG in the node: 2 * (3 * 2 us + 3/4 * 8 MB / 10 GB/s);
        # across: 2 * 1 * 20 us + 2 * 1/2 * (8 MB / 4) / (1 GB/s / 4)
        want = 2 * (3 * 2e-6 + 0.75 * 8e6 / 10e9) + 2 * 20e-6 + 1.0 * 8e6 / 1e9
        self.assertAlmostEqual(ab.allreduce_hierarchical(8e6, 8, self.hw()), want)

    def test_forms_agree_where_they_must(self):
        for p in (2, 3, 4):  # one node: both are the same ring
            self.assertAlmostEqual(ab.allreduce_ring(5e6, p, self.hw(g=4)),
                                   ab.allreduce_hierarchical(5e6, p, self.hw(g=4)))
        for p in (2, 5, 64):  # one rank per node: hierarchical is the ring across nodes
            self.assertAlmostEqual(ab.allreduce_ring(5e6, p, self.hw(g=1)),
                                   ab.allreduce_hierarchical(5e6, p, self.hw(g=1)))
        self.assertEqual(ab.allreduce_ring(5e6, 1, self.hw()), 0.0)
        self.assertEqual(ab.allreduce_hierarchical(5e6, 1, self.hw()), 0.0)

    def test_hierarchical_pays_fewer_latencies_at_scale(self):
        hw = self.hw(g=8)
        small = 64e3
        self.assertLess(ab.allreduce_hierarchical(small, 1024, hw),
                        ab.allreduce_ring(small, 1024, hw))


class Buckets(unittest.TestCase):
    def test_ember_rule_by_hand(self):
        # registration order a(3) b(5) c(2) d(7) floats; backward order d c b a; cap 8 floats:
        # d=7 -> [d]; c would make 9 -> new [c]; b: 2+5=7 -> [c b]; a: 7+3=10 -> new [a]
        prof = toy_profile(backward=(1, 2, 3, 4), params=((3,), (5,), (2,), (7,)))
        bl = ab.buckets(prof, 8 * 4, grad_bytes=4, rule="ember")
        self.assertEqual([b for b, _ in bl], [28, 28, 12])
        # ready: d after 4 s; c, b after 4+3, 4+3+2; a after 10
        self.assertEqual([r for _, r in bl], [4, 9, 10])

    def test_pytorch_rule_first_bucket_is_one_mb(self):
        # four 0.75 MB parameters, cap 25 MB: the first bucket closes at 1.5 MB (>= 1 MB)
        n = 3 * MB // 16  # floats in 0.75 MB
        prof = toy_profile(backward=(1, 1, 1, 1), params=((n,), (n,), (n,), (n,)))
        bl = ab.buckets(prof, 25 * MB, rule="pytorch")
        self.assertEqual([b for b, _ in bl], [2 * 4 * n, 2 * 4 * n])

    def test_ember_mlp_has_three_buckets_at_4_mb(self):
        # docs/ddp.md: "MLP 784-1024-1024-10 (7.2 MB of gradients, 3 buckets at the default 4 MB)"
        layers = profiles.build("ember_mlp")
        prof = profiles.Profile("mlp", 64, layers, 0.0, 0.0)
        self.assertEqual(len(ab.buckets(prof, 4 * MB, align=16)), 3)


class Step(unittest.TestCase):
    def setUp(self):
        # One rank per node, 1 GB/s, no latency: all-reduce of n bytes at p=2 takes n / 1 GB/s.
        self.hw = ab.Hardware("t", 1, 1e12, 0.0, 1e9, 0.0)
        # backward order: l2 (30 ms, 16 kB), l1 (20 ms, 8 kB), l0 (10 ms, 4 kB)
        self.prof = toy_profile()

    def test_overlap_schedule_by_hand(self):
        cfg = ab.Config(bucket_mb=1e-9, algorithm="ring")  # one parameter per bucket
        r = ab.step(self.prof, self.hw, 2, cfg)
        # b0 16 kB ready 30 ms, 16 us; b1 8 kB ready 50 ms; b2 4 kB ready 60 ms, ends 60.004
        self.assertEqual(r["buckets"], 3)
        self.assertAlmostEqual(r["comm_s"], 28e3 / 1e9)
        self.assertAlmostEqual(r["exposed_s"], 4e3 / 1e9)
        self.assertAlmostEqual(r["step_s"], 0.015 + 0.060 + 4e-6 + 0.001)

    def test_a_slow_bucket_delays_the_next(self):
        slow = ab.Hardware("t", 1, 1e12, 0.0, 1e6, 0.0)  # 1 MB/s: 16 kB takes 16 ms
        r = ab.step(self.prof, slow, 2, ab.Config(bucket_mb=1e-9))
        # b0 30 -> 46 ms; b1 ready 50 -> 58; b2 ready 60 -> 64
        self.assertAlmostEqual(r["exposed_s"], 0.004)
        slow2 = ab.Hardware("t", 1, 1e12, 0.0, 0.5e6, 0.0)  # 32, 16, 8 ms
        r = ab.step(self.prof, slow2, 2, ab.Config(bucket_mb=1e-9))
        # b0 30 -> 62; b1 starts 62 -> 78; b2 starts 78 -> 86
        self.assertAlmostEqual(r["exposed_s"], 0.026)

    def test_without_overlap_everything_follows_backward(self):
        r = ab.step(self.prof, self.hw, 2, ab.Config(bucket_mb=1e-9, overlap=False))
        self.assertAlmostEqual(r["exposed_s"], r["comm_s"])
        self.assertAlmostEqual(r["step_s"], 0.015 + 0.060 + 28e-6 + 0.001)

    def test_world_of_one_is_compute_only(self):
        r = ab.step(self.prof, self.hw, 1, ab.Config())
        self.assertEqual(r["comm_s"], 0.0)
        self.assertAlmostEqual(r["step_s"], 0.076)
        self.assertAlmostEqual(ab.efficiency(self.prof, self.hw, 1, ab.Config()), 1.0)

    def test_best_bucket_follows_latency(self):
        # No latency: the smallest buckets overlap most. Huge latency: one bucket.
        prof = pub.arch_profile("resnet50", "v100", pub.HARDWARE["v100x8-1x100ib"])
        fast = ab.Hardware("t", 8, 100e9, 0.0, 10e9, 0.0)
        self.assertEqual(ab.best_bucket(prof, fast, 64, ab.Config())[0], 0.5)
        slow = ab.Hardware("t", 8, 100e9, 1e-3, 10e9, 1e-3)
        self.assertEqual(ab.best_bucket(prof, slow, 64, ab.Config())[0], 128)

    def test_comm_bound_at(self):
        # comm at p: 2(p-1)/p * 28 kB / B; with B = 0.5 MB/s, p=2 gives 56 ms < 60 ms backward,
        # p=4 gives 84 ms >= 60 ms.
        hw = ab.Hardware("t", 1, 1e12, 0.0, 0.5e6, 0.0)
        self.assertEqual(ab.comm_bound_at(self.prof, hw, ab.Config(), [1, 2, 4, 8]), 4)
        self.assertIsNone(ab.comm_bound_at(self.prof, self.hw, ab.Config(), [1, 2, 4, 8]))


class ProfileJson(unittest.TestCase):
    def test_round_trip_and_backward_order(self):
        prof = toy_profile()
        d = prof.to_json()
        back = profiles.profile_from_dict(json.loads(json.dumps(d)))
        self.assertEqual([l.params for l in back.layers], [l.params for l in prof.layers])
        self.assertAlmostEqual(back.backward_s(), 0.060)
        d["order"] = "backward"
        rev = profiles.profile_from_dict(d)
        self.assertEqual([l.name for l in rev.layers], ["l2", "l1", "l0"])

    def test_bad_profiles_name_the_field(self):
        base = toy_profile().to_json()
        for patch, word in (({"version": 9}, "version"), ({"layers": []}, "layers"),
                            ({"forward_s": -1}, "forward_s"), ({"order": "up"}, "order")):
            d = dict(base)
            d.update(patch)
            with self.subTest(word):
                with self.assertRaisesRegex(profiles.ProfileError, word):
                    profiles.profile_from_dict(d)
        d = dict(base)
        d["layers"] = [{"name": "x", "params": [5]}]
        with self.assertRaisesRegex(profiles.ProfileError, r"layers\[0\].*backward_s"):
            profiles.profile_from_dict(d)


class Published(unittest.TestCase):
    def test_the_issues_figures_are_within_ten_points(self):
        rows = {r["case"]: r for r in val.validate_published()}
        for key in ("ptbench-r50-16", "ddp-paper-r50-256", "horovod-incv3-512",
                    "horovod-r101-512"):
            with self.subTest(key):
                r = rows[key]
                self.assertTrue(r["met"], "%s: predicted %.3f, published %.3f" %
                                (key, r["predicted"], r["published"]))
                self.assertAlmostEqual(r["error_points"], 100 * (r["predicted"] - r["published"]))

    def test_published_inputs_are_the_sources_numbers(self):
        self.assertAlmostEqual(pub.COMPUTE[("v100", "resnet50")][1], 0.097)
        c = {c.key: c for c in pub.CASES}
        self.assertAlmostEqual(c["ptbench-r50-16"].published, 306 / 329)
        self.assertEqual(pub.HARDWARE["p100x4-25gbe-roce"].gpus_per_node, 4)
        self.assertAlmostEqual(pub.HARDWARE["p100x4-25gbe-roce"].inter_bw, 0.8 * 25e9 / 8)


class Measured(unittest.TestCase):
    def test_prediction_against_a_hand_value(self):
        with tempfile.TemporaryDirectory() as d:
            prof = os.path.join(d, "p.json")
            with open(prof, "w") as f:
                json.dump(toy_profile().to_json(), f)
            # 2 nodes x 1 rank at 1 Gbit/s (0.8 achieved = 100 MB/s), no latency, one bucket
            # (28 kB, padded to 16 floats: 1008 + 2000 + 4000 -> 7008 floats) after 60 ms:
            # step = 15 + 60 + 28032 B / 1e8 B/s + 1 ms
            want = 1e3 * (0.015 + 0.060 + 28032 / 1e8 + 0.001)
            csvp = os.path.join(d, "m.csv")
            with open(csvp, "w") as f:
                f.write("nodes,ranks_per_node,link_gbit,step_ms,tag\n2,1,1,%.6f,x\n" % want)
            rows = val.validate_measured(csvp, profile=prof, alpha_inter=0.0, alpha_intra=0.0)
            self.assertAlmostEqual(rows[0]["predicted_ms"], want)
            self.assertAlmostEqual(rows[0]["error_pct"], 0.0, places=6)
            self.assertEqual(rows[0]["tag"], "x")
            self.assertEqual(rows[0]["algorithm"], "ring")

    def test_bad_csv(self):
        with tempfile.TemporaryDirectory() as d:
            csvp = os.path.join(d, "m.csv")
            with open(csvp, "w") as f:
                f.write("nodes,link_gbit,step_ms\n2,1,3\n")
            r = run("validate-measured", csvp, "--profile", "nothing.json")
            self.assertEqual(r.returncode, 2)
            self.assertIn("ranks_per_node", r.stderr)


class Cli(unittest.TestCase):
    def test_predict_json(self):
        r = run("predict", "--model", "resnet50", "--world", "256", "--hardware", "v100x8-1x100ib",
                "--rule", "pytorch")
        self.assertEqual(r.returncode, 0, r.stderr)
        d = json.loads(r.stdout)
        self.assertEqual((d["nodes"], d["ranks_per_node"], d["params"]), (32, 8, 25557032))
        self.assertAlmostEqual(d["step_ms"], 97.0 * 1 / d["efficiency"], places=6)

    def test_sweep_csv_to_1024(self):
        r = run("sweep", "--model", "resnet101", "--hardware", "p100x4-25gbe-roce")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().split("\n")
        self.assertEqual(len(lines), 12)
        self.assertTrue(lines[0].startswith("world,"))
        self.assertTrue(lines[-1].startswith("1024,4,256,"))

    def test_bad_input_exits_2(self):
        r = run("predict", "--model", "resnet50", "--world", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--world", r.stderr)
        r = run("predict", "--profile", "/nonexistent.json", "--world", "2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent.json", r.stderr)

    @unittest.skipUnless(shutil.which("gnuplot"), "gnuplot not installed")
    def test_plot_writes_a_png(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "eff.png")
            r = run("plot", "--out", out, "--max-world", "64")
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            self.assertIn("| 64 |", r.stdout)


if __name__ == "__main__":
    unittest.main()
