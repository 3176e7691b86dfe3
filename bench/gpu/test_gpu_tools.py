#!/usr/bin/env python3
"""Tests of the GPU run's tools that need no GPU (standard library only):

    python3 -m unittest discover -s bench/gpu -p 'test_*.py'

ptxas.py's parser on ptxas -v and cuobjdump -sass text as CUDA prints them, and report.py on
files a killed run leaves: a torn last line, a test summary written while tests still ran.
GpuRecipeTests runs this file in the xunit suite.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import ptxas  # noqa: E402

PTXAS_OUTPUT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'MatmulKernels_Tiled_128x128' for 'sm_90'
ptxas info    : Function properties for MatmulKernels_Tiled_128x128
    256 bytes stack frame, 64 bytes spill stores, 48 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 32768 bytes smem, 400 bytes cmem[0], 8 bytes cmem[2]
ptxas info    : Function properties for helper_function
    16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compile time = 12.345 ms
"""

PTXAS_NO_SHARED = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'ElementwiseKernels_Add' for 'sm_90'
ptxas info    : Function properties for ElementwiseKernels_Add
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, 380 bytes cmem[0]
"""

SASS = """\
	code for sm_90
		Function : MatmulKernels_Tiled_128x128
	.headerflags	@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                                       /* 0x00000a00ff017b82 */
        /*0010*/                   LDS.128 R4, [R2] ;                                           /* 0x0000000002047984 */
        /*0020*/                   LDS R8, [R2+0x10] ;                                          /* 0x0000100002087984 */
        /*0030*/                   FFMA R9, R4, R5, R9 ;                                        /* 0x0000000504097223 */
        /*0040*/               @P0 FFMA R10, R4, R6, R10 ;                                      /* 0x00000006040a0223 */
        /*0050*/                   FMUL R11, R4, R7 ;                                           /* 0x0000000704 */
        /*0060*/              @!P1 FADD R11, R11, R12 ;                                         /* 0x0000000c0b */
        /*0070*/                   LDG.E.128 R12, desc[UR4][R2.64] ;                            /* 0x00000004020c */
        /*0080*/                   STL.64 [R1], R4 ;                                            /* 0x0000000401 */
        /*0090*/                   LDL R5, [R1+0x8] ;                                           /* 0x0000080001 */
        /*00a0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;                                /* 0x0000000000 */
        /*00b0*/                   STG.E desc[UR4][R2.64], R9 ;                                 /* 0x0000000902 */
        /*00c0*/                   EXIT ;                                                       /* 0x000000000000794d */
"""


class PtxasParsing(unittest.TestCase):
    def test_entry_with_spills_shared_memory_and_a_called_function(self):
        entries, functions = ptxas.parse_ptxas(PTXAS_OUTPUT)
        self.assertEqual(len(entries), 1)
        entry = entries[0]
        self.assertEqual(entry["entry"], "MatmulKernels_Tiled_128x128")
        self.assertEqual(entry["arch"], "sm_90")
        self.assertEqual((entry["registers"], entry["barriers"], entry["smem"]), (255, 1, 32768))
        self.assertEqual((entry["stack_frame"], entry["spill_stores"], entry["spill_loads"]), (256, 64, 48))
        self.assertEqual(entry["cmem"], {"cmem[0]": 400, "cmem[2]": 8})
        self.assertEqual(functions, [{"function": "helper_function", "stack_frame": 16, "spill_stores": 0, "spill_loads": 0}])

    def test_entry_without_barriers_or_shared_memory(self):
        entries, functions = ptxas.parse_ptxas(PTXAS_NO_SHARED)
        self.assertEqual(entries[0]["registers"], 12)
        self.assertEqual((entries[0]["barriers"], entries[0]["smem"], entries[0]["spill_stores"]), (0, 0, 0))
        self.assertEqual(functions, [])

    def test_an_error_gives_no_entries(self):
        entries, _ = ptxas.parse_ptxas("ptxas fatal   : Unresolved extern function 'foo'\n")
        self.assertEqual(entries, [])

    def test_sass_counts_by_kind_and_width(self):
        counts = ptxas.count_sass(SASS)
        self.assertEqual(counts["instructions"], 13)
        self.assertEqual((counts["ffma"], counts["fmul"], counts["fadd"]), (2, 1, 1))
        self.assertEqual(counts["lds"], {"128": 1, "32": 1})
        self.assertEqual(counts["ldg"], {"128": 1})
        self.assertEqual(counts["stg"], {"32": 1})
        self.assertEqual((counts["local"], counts["bar"]), (2, 1))


class PtxasOverAFolder(unittest.TestCase):
    """ptxas.py end to end with stand-ins for ptxas and cuobjdump that print what CUDA's tools print."""

    def test_each_kernel_gets_a_line_and_a_failure_is_a_finding(self):
        with tempfile.TemporaryDirectory() as folder:
            tools, ptx, sass = (os.path.join(folder, name) for name in ("tools", "ptx", "sass"))
            for path in (tools, ptx):
                os.makedirs(path)
            self.tool(tools, "ptxas", "[ \"$1\" = --version ] && { echo 'Cuda compilation tools, release 13.0'; exit 0; }\n"
                      "case \"$5\" in *Bad*) echo \"ptxas fatal   : Unresolved extern function 'missing'\" >&2; exit 255 ;; esac\n"
                      f"cat <<'END'\n{PTXAS_OUTPUT}END\n: > \"$4\"\n")
            self.tool(tools, "cuobjdump", f"cat <<'END'\n{SASS}END\n")
            for name in ("MatmulKernels.Tiled.ptx", "AttentionKernels.Bad.ptx"):
                with open(os.path.join(ptx, name), "w", encoding="utf-8") as f:
                    f.write(".version 8.0\n.target sm_90\n")
            jsonl = os.path.join(folder, "ptxas.jsonl")
            environment = dict(os.environ, PATH=tools + os.pathsep + os.environ.get("PATH", ""))
            done = subprocess.run([sys.executable, os.path.join(HERE, "ptxas.py"), "--ptx-dir", ptx, "--jsonl", jsonl, "--sass-dir", sass, "--jobs", "2"],
                                  capture_output=True, text=True, env=environment)
            self.assertEqual(done.returncode, 0, done.stderr)
            with open(jsonl, encoding="utf-8") as f:
                lines = {line["kernel"]: line for line in map(json.loads, f)}
            self.assertEqual(set(lines), {"MatmulKernels.Tiled", "AttentionKernels.Bad"})
            good, bad = lines["MatmulKernels.Tiled"], lines["AttentionKernels.Bad"]
            self.assertTrue(good["ok"])
            self.assertEqual(good["entries"][0]["registers"], 255)
            self.assertEqual(good["sass"]["ffma"], 2)
            self.assertFalse(bad["ok"])
            self.assertIn("Unresolved extern function", bad["error"])
            self.assertEqual(sorted(os.listdir(sass)), ["MatmulKernels.Tiled.sass"])  # the cubin goes once read
            self.assertIn("1 assembled, 1 failed", done.stderr)

    @staticmethod
    def tool(folder, name, body):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)


class ReportFromWhatAKillLeaves(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)

    def path(self, name):
        return os.path.join(self.folder.name, name)

    def write(self, name, text):
        with open(self.path(name), "w", encoding="utf-8") as f:
            f.write(text)

    def report(self, *args):
        command = [sys.executable, os.path.join(HERE, "report.py"), "--out-json", self.path("r.json"), "--out-md", self.path("r.md"), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(self.path("r.json"), encoding="utf-8") as f, open(self.path("r.md"), encoding="utf-8") as md:
            return json.load(f), md.read()

    def test_nothing_at_all_still_gives_a_report(self):
        document, text = self.report("--ours", self.path("missing.jsonl"), "--tests", self.path("missing.json"))
        self.assertEqual(document["comparisons"], [])
        self.assertIn("no result (not run, or killed before the first summary)", text)

    def test_pairs_what_both_sides_measured_and_skips_a_torn_line(self):
        shape = {"rows": 8192, "cols": 4096}
        ours = {"op": "softmax_fwd", "shape": shape, "impl": "ours", "unit": "GB/s", "rate": 1000.0, "median_ms": 0.27, "clock": "device events", "launches_per_sample": 19}
        theirs = {"op": "softmax_fwd", "shape": shape, "impl": "torch", "unit": "GB/s", "rate": 2000.0, "median_ms": 0.13, "label": "torch.softmax"}
        self.write("ours.jsonl", json.dumps({"run": {"backend": "cuda", "device": "NVIDIA H200"}}) + "\n" + json.dumps({"measurement": ours}) + "\n"
                   + '{"measurement": {"op": "softmax_bwd", "sha')
        self.write("torch.jsonl", json.dumps({"run": {"torch": "2.11"}}) + "\n" + json.dumps({"measurement": theirs}) + "\n")
        document, text = self.report("--ours", self.path("ours.jsonl"), "--torch", self.path("torch.jsonl"))
        self.assertEqual(document["torn_lines"]["ours"], 1)
        [group] = document["comparisons"]
        self.assertAlmostEqual(group["ratios"]["ours/torch"], 0.5)
        self.assertAlmostEqual(group["percent_of_peak"]["ours:ours"], 100 * 1000 / 4800)
        self.assertIn("| softmax fwd | 8192 × 4096 |", text)
        self.assertIn("0.50×", text)
        self.assertIn("device events; 19–19 launches", text)

    def test_a_test_summary_written_mid_run_is_marked_partial(self):
        self.write("tests.json", json.dumps({"passed": 40, "failed": 1, "skipped": 2, "total": 43, "seconds": 61.0, "stopped_at_time_limit": False,
                                             "failures": [{"test": "AttentionTests.Backward(backend: \"cuda\")", "message": "Assert.True() Failure"}],
                                             "slowest": [], "finished": False}))
        _, text = self.report("--tests", self.path("tests.json"))
        self.assertIn("40 passed, 1 failed, 2 skipped", text)
        self.assertIn("killed before the end", text)
        self.assertIn("FAIL AttentionTests.Backward", text)

    def test_ptxas_failures_are_findings_in_the_table(self):
        lines = [{"kernel": "A.Good", "ok": True, "entries": [{"entry": "a", "registers": 40, "spill_stores": 0, "spill_loads": 0, "stack_frame": 0, "smem": 0, "barriers": 0}]},
                 {"kernel": "B.Bad", "ok": False, "error": "ptxas fatal : Unresolved extern function"}]
        self.write("ptxas.jsonl", "".join(json.dumps(l) + "\n" for l in lines))
        document, text = self.report("--ptxas", self.path("ptxas.jsonl"))
        self.assertEqual(document["ptxas"]["summary"]["assembled"], 1)
        self.assertEqual(document["ptxas"]["summary"]["failed"][0]["kernel"], "B.Bad")
        self.assertIn("1 of 2 kernels assembled; 1 failed", text)
        self.assertIn("| B.Bad | **failed**", text)


if __name__ == "__main__":
    unittest.main()
