"""varco-ocr's client CPU per page against the floor of that work (issue 17), measured side by side.

An instant OpenAI-compatible server (its own process, so its CPU is not counted) answers every page with
400 OCR entries (~22 tokens each, per-token log-probabilities as vLLM returns them, or none). Two
clients read the same inputs through it, each in a child process whose CPU time (user + system, the
child and anything it forks, from ``os.wait4``) is divided by the pages read:

  varco-ocr  ``python -m varco_ocr ocr INPUT -o OUT --server URL -f FORMATS`` (the real command)
  floor      only the unavoidable work: render the PDF page at the same dpi (or decode the PNG), apply
             the model card's upscale rule, PNG-encode + base64, one keep-alive POST, parse the JSON
             reply and the answer's entries (and their confidences), write one JSON per document
             with the C encoder

Inputs (made once per run): one PDF of N A4 text pages (rendered at 300 dpi: 2480x3508, no upscale),
N PNG "scans" of the same pages at 200 dpi (1654x2339 RGB: upscaled to 2304 on the long side) and, for
the png300 row, at 300 dpi (2480x3508 RGB: sent as they are). The pages are black text on white, so
every pixel is grey, as on most scans.
Rows: PDF and PNG, JSON only and all five formats (json,txt,hocr,alto,pdf), with and without
log-probabilities. Ratios are varco-ocr / floor in the same run; "x json" is all formats / JSON only.
The floor always sends an RGB PNG it encoded; varco-ocr may send less (a single-channel PNG for a grey
page, a file's own bytes), which is the floor lowered, so a ratio may go under 1.

    python benchmarks/client_floor.py [--pages 20] [--repeat 1] [--rows all] [--save DIR] [--compare DIR]
        [--check-pixels]

``--save DIR`` keeps varco-ocr's JSON outputs (paths normalised) and ``--compare DIR`` checks this run's
against them, so outputs can be shown identical before and after a change. ``--check-pixels`` makes the
server decode every image, convert it to RGB (as transformers' image loading does) and put a hash of
the pixels in the answer's first word: the saved outputs then also pin the pixels the server saw.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS_PER_PAGE = 400
ALL_FORMATS = "json,txt,hocr,alto,pdf"
MODEL = "NCSOFT/VARCO-VISION-2.0-1.7B-OCR"

# --------------------------------------------------------------------------------------------
# The instant server (run in its own process with --serve)
# --------------------------------------------------------------------------------------------


def answer_tokens(seed: str) -> list[str]:
    """400 entries in a 40 x 10 grid, tokenised roughly as Qwen3 does (text in 1-3 character pieces,
    each number and separator its own token): ~22 tokens per entry, as RESULTS.md's estimate."""
    rng = random.Random(seed)
    tokens: list[str] = []
    for i in range(WORDS_PER_PAGE):
        row, col = divmod(i, 10)
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(2, 9)))
        if i == 0:
            word = seed[:12] or word
        x1, y1 = 0.05 + col * 0.09, 0.04 + row * 0.023
        box = [round(x1, 3), round(y1, 3), round(x1 + 0.08, 3), round(y1 + 0.018, 3)]
        tokens += ["<char>", *[word[j:j + 3] for j in range(0, len(word), 3)], "</char>", "<bbox>"]
        for k, v in enumerate(box):
            tokens += [f"{v:g}"] + ([", "] if k < 3 else [])
        tokens += ["</bbox>", "\n"]
    return tokens


def answer_body(seed: str, logprobs: bool) -> bytes:
    tokens = answer_tokens(seed)
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": "stop"}
    if logprobs:
        rng = random.Random(seed + "lp")
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": -rng.random() * 0.5, "bytes": list(t.encode()), "top_logprobs": []} for t in tokens
        ]}
    return json.dumps({"id": "cmpl", "object": "chat.completion", "model": MODEL, "choices": [choice],
                       "usage": {"prompt_tokens": 5800, "completion_tokens": len(tokens)}}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client that reuses connections pays no reconnect
    check_pixels = False
    cache: dict = {}

    def log_message(self, *args) -> None:
        pass

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        seed = f"{image.size[0]}x{image.size[1]}"
        if self.check_pixels:  # what the model would see: transformers' loading converts to RGB
            seed = hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()[:12]
        logprobs = self.path.startswith("/lp/")
        key = (seed, logprobs)
        if key not in self.cache:
            self.cache[key] = answer_body(seed, logprobs)
        self._send(self.cache[key])


def serve(check_pixels: bool) -> None:
    _Handler.check_pixels = check_pixels
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


# --------------------------------------------------------------------------------------------
# The floor client (run in its own process with --floor)
# --------------------------------------------------------------------------------------------

_ENTRY = re.compile(r"<char>(.*?)</char>\s*<bbox>([^<]*)</bbox>", re.S)


def floor_client(url: str, inputs: list[Path], out: Path, dpi: float, min_long_side: int = 2304) -> None:
    import http.client
    from urllib.parse import urlparse

    from PIL import Image

    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port)

    def read(image: "Image.Image") -> list:
        w, h = image.size
        if max(w, h) < min_long_side:  # the model card's upscale rule
            s = min_long_side / max(w, h)
            image = image.resize((int(w * s), int(h * s)), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}},
            {"type": "text", "text": "<ocr>"}]}], "temperature": 0, "max_tokens": 8192, "logprobs": True})
        conn.request("POST", parsed.path + "/chat/completions", body, {"Content-Type": "application/json"})
        choice = json.loads(conn.getresponse().read())["choices"][0]
        text = choice["message"]["content"]
        lp = (choice.get("logprobs") or {}).get("content")
        confs: list = []
        if lp:  # minimum token probability inside each <char>...</char>
            import math

            cur = None
            for e in lp:
                if e["token"] == "<char>":
                    cur = []
                elif e["token"] == "</char>" and cur is not None:
                    confs.append(math.exp(min(cur)) if cur else None)
                    cur = None
                elif cur is not None:
                    cur.append(e["logprob"])
        words = []
        for i, m in enumerate(_ENTRY.finditer(text)):
            x1, y1, x2, y2 = (float(v) for v in m.group(2).split(","))
            words.append({"text": m.group(1), "bbox": [round(x1 * w), round(y1 * h), round(x2 * w), round(y2 * h)],
                          "confidence": confs[i] if i < len(confs) else None})
        return words

    out.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        pages = []
        if path.suffix == ".pdf":
            # without pymupdf's optional layout packages, as the varco-ocr command (cli._PYMUPDF_EXTRAS):
            # importing them is no part of the floor's work (~500 ms CPU where they are installed)
            for name in ("pymupdf.layout", "pymupdf4llm"):
                sys.modules.setdefault(name, None)  # type: ignore[arg-type]
            import pymupdf

            with pymupdf.open(path) as doc:
                for page in doc:
                    pix = page.get_pixmap(matrix=pymupdf.Matrix(dpi / 72, dpi / 72), colorspace=pymupdf.csRGB, alpha=False)
                    pages.append(read(Image.frombuffer("RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", 0, 1)))
        else:
            with Image.open(path) as im:
                pages.append(read(im.convert("RGB") if im.mode not in ("RGB", "L") else im))
        with open(out / (path.stem + ".json"), "w", encoding="utf-8") as f:
            json.dump({"source": str(path), "pages": [{"words": p} for p in pages]}, f, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Inputs, measurement, report
# --------------------------------------------------------------------------------------------


def make_inputs(folder: Path, pages: int) -> tuple[Path, Path]:
    """One PDF of ``pages`` A4 text pages and the same pages as 200-dpi and 300-dpi RGB PNG scans."""
    import pymupdf

    rng = random.Random(0)
    pdf_dir, png_dir, png300_dir = folder / "pdf", folder / "png", folder / "png300"
    for d in (pdf_dir, png_dir, png300_dir):
        d.mkdir(parents=True)
    doc = pymupdf.open()
    for p in range(pages):
        page = doc.new_page(width=595, height=842)
        for line in range(48):
            words = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(9))
            page.insert_text((50, 60 + line * 15.5), words, fontsize=10)
        page.insert_text((50, 820), f"page {p + 1}", fontsize=9)
    doc.save(pdf_dir / "doc.pdf")
    for p, page in enumerate(doc):
        page.get_pixmap(dpi=200, colorspace=pymupdf.csRGB, alpha=False).save(png_dir / f"scan-{p + 1:03d}.png")
        page.get_pixmap(dpi=300, colorspace=pymupdf.csRGB, alpha=False).save(png300_dir / f"scan-{p + 1:03d}.png")
    doc.close()
    return pdf_dir, png_dir, png300_dir


def cpu_of(cmd: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of ``cmd``'s process and the children it waited for."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def normalised_outputs(out: Path, root: Path) -> dict[str, str]:
    """varco-ocr's JSON outputs with the temporary folder taken out of their paths."""
    result = {}
    for path in sorted(out.rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["source"] = os.path.relpath(doc["source"], root)
        doc.get("metadata", {}).pop("source_path", None)
        result[path.relative_to(out).as_posix()] = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    return result


ROWS = {  # name: (input kind, formats, log-probabilities)
    "pdf-json": ("pdf", "json", False),
    "pdf-json-lp": ("pdf", "json", True),
    "png-json": ("png", "json", False),
    "png-json-lp": ("png", "json", True),
    "png300-json-lp": ("png300", "json", True),
    "pdf-all-lp": ("pdf", ALL_FORMATS, True),
    "png-all-lp": ("png", ALL_FORMATS, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row (interleaved); the median is shown")
    parser.add_argument("--rows", default="all", help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--dpi", type=float, default=300.0)
    parser.add_argument("--save", type=Path, help="keep varco-ocr's normalised JSON outputs here")
    parser.add_argument("--compare", type=Path, help="check varco-ocr's outputs equal those saved here")
    parser.add_argument("--check-pixels", action="store_true", help="answers carry a hash of the RGB pixels sent")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs="+", help=argparse.SUPPRESS)  # URL OUT DPI INPUT...
    args = parser.parse_args()
    if args.serve:
        return serve(args.check_pixels)
    if args.floor:
        url, out, dpi, *inputs = args.floor
        return floor_client(url, [Path(p) for p in inputs], Path(out), float(dpi))

    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, __file__, "--serve"] + (["--check-pixels"] if args.check_pixels else []),
                              stdout=subprocess.PIPE, env=env)
    port = int(server.stdout.readline())  # type: ignore[union-attr]
    tmp = Path(tempfile.mkdtemp(prefix="client-floor-"))
    try:
        dirs = dict(zip(("pdf", "png", "png300"), make_inputs(tmp / "in", args.pages)))
        cpu: dict[tuple[str, str], list[float]] = {}
        outputs: dict[str, dict[str, str]] = {}
        help_cpu = [cpu_of([sys.executable, "-m", "varco_ocr", "--help"], env) for _ in range(args.repeat)]
        for rep in range(args.repeat):
            for name in rows:
                kind, formats, logprobs = ROWS[name]
                url = f"http://127.0.0.1:{port}" + ("/lp/v1" if logprobs else "/v1")
                out = tmp / "out" / f"{name}-{rep}"
                cpu.setdefault((name, "varco"), []).append(cpu_of(
                    [sys.executable, "-m", "varco_ocr", "ocr", str(dirs[kind]), "-o", str(out), "--server", url,
                     "-f", formats, "--dpi", f"{args.dpi:g}"], env))
                outputs.setdefault(name, normalised_outputs(out, tmp))
                floor_out = tmp / "floor" / f"{name}-{rep}"
                cpu.setdefault((name, "floor"), []).append(cpu_of(
                    [sys.executable, __file__, "--floor", url, str(floor_out), f"{args.dpi:g}",
                     *sorted(str(p) for p in dirs[kind].iterdir())], env))
                shutil.rmtree(out)
                shutil.rmtree(floor_out)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    per_page = {k: statistics.median(v) / args.pages * 1000 for k, v in cpu.items()}
    print(f"{args.pages} pages per row, median of {args.repeat} run(s); `varco-ocr --help`: "
          f"{statistics.median(help_cpu) * 1000:.0f} ms CPU")
    print(f"| row | varco-ocr ms/page | floor ms/page | ratio | x json |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    for name in rows:
        v, f = per_page[(name, "varco")], per_page[(name, "floor")]
        kind, formats, logprobs = ROWS[name]
        json_row = f"{kind}-json" + ("-lp" if logprobs else "")
        xjson = f"{v / per_page[(json_row, 'varco')]:.2f}x" if formats != "json" and (json_row, "varco") in per_page else ""
        print(f"| {name} | {v:.0f} | {f:.0f} | **{v / f:.2f}x** | {xjson} |")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "outputs.json").write_text(json.dumps(outputs, indent=1, sort_keys=True), encoding="utf-8")
    if args.compare:
        saved = json.loads((args.compare / "outputs.json").read_text(encoding="utf-8"))
        for name in rows:
            if name not in saved:
                print(f"{name}: no saved outputs to compare")
            elif saved[name] == outputs[name]:
                print(f"{name}: outputs identical to {args.compare} ({len(outputs[name])} files)")
            else:
                differ = [k for k in saved[name] if saved[name][k] != outputs[name].get(k)]
                print(f"{name}: OUTPUTS DIFFER from {args.compare}: {', '.join(differ[:5])}")
                sys.exit(1)


if __name__ == "__main__":
    main()
