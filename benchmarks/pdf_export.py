"""Searchable-PDF export (issue 14): output size against the previous exporter, and peak memory for a
large scanned PDF against a small one.

    python benchmarks/pdf_export.py size   [--baseline-commit 3a4989d]   # 10-page scan, both exporters
    python benchmarks/pdf_export.py memory [--pages 500 --small 10 --dpi 300] [--baseline-commit 3a4989d]

``size``: a 10-page Korean/English scan (image-only PDF, 150 dpi) with its perfect-OCR document,
exported by this checkout's exporter and by ``varco_ocr/exporters/pdf.py`` as of the baseline commit
(loaded from git into a temporary module). ``memory``: synthetic scans (one noise JPEG of an A4 page
at ``--dpi``, made distinct per page by a JPEG comment, so nothing is deduplicated), each exported in
a fresh process; peak RSS is that process's VmHWM. Files live in a temporary folder, never in git.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ten_page_scan(folder: Path):
    from tests.exporters.conftest import PAGE_TEXTS, document_from_pdf_text, write_scanned_pdf, write_text_pdf

    texts = [PAGE_TEXTS[i % 3][:-1] + [f"{PAGE_TEXTS[i % 3][-1]} {i + 1}쪽"] for i in range(10)]  # ten distinct pages
    text_pdf = write_text_pdf(folder / "text.pdf", texts=texts, rotations=(0,) * 10)
    raw = write_scanned_pdf(text_pdf, folder / "raw.pdf", dpi=150)
    import pymupdf

    scan = folder / "scan.pdf"
    with pymupdf.open(raw) as pdf:  # compressed, as the exports are: "over the scan" is the text layer
        pdf.save(scan, garbage=3, deflate=True)
    doc = document_from_pdf_text(text_pdf, dpi=150)
    from varco_ocr.document import Document

    return scan, Document(source=str(scan), pages=doc.pages, model=doc.model)


def size(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_pdf, old_export = _load_exporter(None, folder), _load_exporter(args.baseline_commit, folder)
        scan, doc = _ten_page_scan(folder)
        t0 = time.perf_counter()
        old_export(doc, folder / "old.pdf", source=scan)
        t1 = time.perf_counter()
        export_pdf(doc, folder / "new.pdf", source=scan)
        t2 = time.perf_counter()
        a, b, s = (folder / "old.pdf").stat().st_size, (folder / "new.pdf").stat().st_size, scan.stat().st_size
        print(f"10-page scan (image-only PDF): {s:,} bytes, {len(doc.words)} words")
        print(f"| exporter | output bytes | over the scan | time s |")
        print(f"| baseline {args.baseline_commit} (CJK font subset) | {a:,} | {a - s:,} | {t1 - t0:.2f} |")
        print(f"| this checkout (glyphless font) | {b:,} | {b - s:,} | {t2 - t1:.2f} |")
        print(f"ratio new/old: {b / a:.3f}; text layer new/old: {(b - s) / (a - s):.3f}")
        import pymupdf

        pymupdf.TOOLS.mupdf_warnings()
        with pymupdf.open(folder / "new.pdf") as pdf:
            words = sum(len(page.get_text("words")) for page in pdf)
        poppler = subprocess.run(["pdftotext", str(folder / "new.pdf"), "-"], capture_output=True)
        print(f"new: pymupdf reads {words} words, warnings {pymupdf.TOOLS.mupdf_warnings()!r}; "
              f"pdftotext exit {poppler.returncode}, stderr {poppler.stderr.decode()!r}")


def _synthetic_scan(path: Path, pages: int, dpi: float) -> None:
    import numpy as np
    import pymupdf
    from PIL import Image

    w, h = round(8.27 * dpi), round(11.69 * dpi)
    rng = np.random.default_rng(0)
    pixels = (200 + rng.integers(0, 56, size=(h, w), dtype=np.uint8)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="JPEG", quality=50)
    jpeg = buf.getvalue()
    pdf, saved = pymupdf.open(), False
    for i in range(pages):
        comment = f"page {i}".encode()
        # A COM segment right after SOI: distinct bytes per page, same pixels.
        data = jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]
        page = pdf.new_page(width=595, height=842)
        page.insert_image(page.rect, stream=data)
        if (i + 1) % 50 == 0 or i + 1 == pages:  # keep the generator's own memory low too
            pdf.saveIncr() if saved else pdf.save(path)
            saved = True
            pdf.close()
            pdf = pymupdf.open(path)
    pdf.close()


def _load_exporter(commit: str | None, folder: Path):
    """``export_pdf`` of this checkout, or of ``commit`` (its pdf.py loaded from git)."""
    if not commit:
        from varco_ocr.exporters.pdf import export_pdf

        return export_pdf
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:varco_ocr/exporters/pdf.py"], check=True, capture_output=True, text=True).stdout
    (folder / "old_pdf.py").write_text(src)
    spec = importlib.util.spec_from_file_location("old_pdf", folder / "old_pdf.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_pdf"] = module
    spec.loader.exec_module(module)
    return module.export_pdf


def _export_child(scan: str, out: str, pages: int, commit: str | None = None) -> None:
    from varco_ocr.document import Document, Word
    from varco_ocr.layout import build_page

    export_pdf = _load_exporter(commit, Path(out).parent)

    ps = tuple(build_page([Word("스캔", (100, 100, 300, 160)), Word(f"page{i}", (320, 100, 600, 160))], index=i, width=2480, height=3508, dpi=300) for i in range(pages))
    t0 = time.perf_counter()
    export_pdf(Document(source=scan, pages=ps), Path(out), source=scan)
    # VmHWM, not ru_maxrss: Linux carries the parent's resident size at fork over exec into ru_maxrss,
    # and the parent that generated the 500-page file is large.
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(f"{hwm / 1024:.1f} {time.perf_counter() - t0:.1f}")


def memory(args) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        rows = []
        for n in (args.small, args.pages):
            scan = Path(tmp) / f"scan{n}.pdf"
            _synthetic_scan(scan, n, args.dpi)
            variants = [("this checkout", None)] + ([(f"baseline {args.baseline_commit}", args.baseline_commit)] if args.baseline_commit else [])
            for label, commit in variants:
                out = Path(tmp) / f"out{n}.pdf"
                cmd = [sys.executable, __file__, "_child", str(scan), str(out), str(n), *([commit] if commit else [])]
                run = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
                rss, secs = run.stdout.split()
                rows.append((label, n, scan.stat().st_size, out.stat().st_size, float(rss), float(secs)))
                out.unlink()
            scan.unlink()
        print("| exporter | pages | source MB | output MB | peak RSS MiB | export s |")
        for label, n, s, o, rss, secs in rows:
            print(f"| {label} | {n} | {s / 1e6:.1f} | {o / 1e6:.1f} | {rss:.1f} | {secs:.1f} |")
        for label in dict.fromkeys(r[0] for r in rows):
            small, large = [r for r in rows if r[0] == label]
            print(f"{label}: peak RSS ratio {large[1]} / {small[1]} pages: {large[4] / small[4]:.2f}x")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _export_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("size")
    s.add_argument("--baseline-commit", default="3a4989d")
    m = sub.add_parser("memory")
    m.add_argument("--pages", type=int, default=500)
    m.add_argument("--small", type=int, default=10)
    m.add_argument("--dpi", type=float, default=300)
    m.add_argument("--tmp", default=None, help="folder for the temporary PDFs (default: the system's)")
    m.add_argument("--baseline-commit", default="", help="also measure the exporter of this commit (it holds the whole output in memory)")
    args = p.parse_args()
    size(args) if args.cmd == "size" else memory(args)


if __name__ == "__main__":
    main()
