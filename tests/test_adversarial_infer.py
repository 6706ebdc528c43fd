"""`edgeseg infer` against hostile or broken inputs (issue G): it never overwrites what it did not write, never
lets one bad input stop the others, bounds the memory an image may take, and cleans up after a killed run.
Real bundles and runtimes throughout (the session's INT8 phantom bundle)."""
import hashlib
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import nibabel as nib
import numpy as np
import pydicom
from test_infer import _dicom_series, _run

LEDGER = "edgeseg-outputs.jsonl"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _phantom_image(phantom_demo, n=1):
    return phantom_demo / "imagesTr" / f"phantom_{n:04d}_0000.png"


def _copy_inputs(phantom_demo, folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"case{i}_0000.png"
        path.write_bytes(_phantom_image(phantom_demo, i).read_bytes())
        paths.append(path)
    return paths


# item 7: outputs never land on inputs; --force replaces only unchanged files edgeseg wrote

def test_output_folder_holding_the_inputs_is_refused_whatever_the_flags(bundle, phantom_demo, tmp_path):
    inputs = _copy_inputs(phantom_demo, tmp_path / "scans")
    before = {p: _sha(p) for p in inputs}
    for out in (tmp_path / "scans", tmp_path):  # the folder itself, and one above it
        for flags in ([], ["--force"]):
            res = _run("infer", bundle, tmp_path / "scans", "-o", out, *flags)
            assert res.exit_code == 2 and "holds the input" in res.output, res.output
            assert "--force" not in res.output.split("holds the input")[1]
    link = tmp_path / "link"  # the same folder through a symlink
    link.symlink_to(tmp_path / "scans")
    res = _run("infer", bundle, inputs[0], "-o", link, "--force")
    assert res.exit_code == 2 and "holds the input" in res.output
    assert {p: _sha(p) for p in inputs} == before
    assert sorted(p.name for p in (tmp_path / "scans").iterdir()) == sorted(p.name for p in inputs)


def test_force_replaces_only_unchanged_outputs_that_edgeseg_wrote(bundle, phantom_demo, tmp_path):
    image, out = _phantom_image(phantom_demo, 2), tmp_path / "out"
    assert _run("infer", bundle, image, "-o", out, "--overlay").exit_code == 0
    ledger = {r["file"]: r for r in map(json.loads, (out / LEDGER).read_text().splitlines()[1:])}
    mask, overlay = out / "phantom_0002.png", out / "phantom_0002_overlay.png"
    assert ledger[mask.name]["sha256"] == _sha(mask) and ledger[overlay.name]["sha256"] == _sha(overlay)
    assert ledger[mask.name]["input"] == str(image)
    res = _run("infer", bundle, image, "-o", out, "--overlay")  # unchanged outputs of ours: --force may replace
    assert res.exit_code == 1 and "pass --force to replace it" in res.output
    assert _run("infer", bundle, image, "-o", out, "--overlay", "--force").exit_code == 0

    mask.write_bytes(b"edited by a radiologist")  # ours, but changed since: never replaced
    for flags in ([], ["--force"]):
        res = _run("infer", bundle, image, "-o", out, *flags)
        assert res.exit_code == 1 and "changed since edgeseg wrote it" in res.output, res.output
    assert mask.read_bytes() == b"edited by a radiologist"

    other = tmp_path / "other"  # a file edgeseg never wrote, with the name an output would take
    other.mkdir()
    (other / "phantom_0002.png").write_bytes(b"patient image")
    for flags in ([], ["--force"]):
        res = _run("infer", bundle, image, "-o", other, *flags)
        assert res.exit_code == 1 and "not written by edgeseg" in res.output, res.output
        assert "--force" not in res.output.split("not written by edgeseg")[1]
    assert (other / "phantom_0002.png").read_bytes() == b"patient image"


def test_a_foreign_file_named_like_the_ledger_is_not_overwritten(bundle, phantom_demo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LEDGER).write_text("my notes")
    res = _run("infer", bundle, _phantom_image(phantom_demo), "-o", out, "--force")
    assert res.exit_code == 2 and LEDGER in res.output and "not an edgeseg output ledger" in res.output
    assert (out / LEDGER).read_text() == "my notes" and [p.name for p in out.iterdir()] == [LEDGER]


def test_report_replaces_only_a_previous_edgeseg_report(bundle, phantom_demo, tmp_path):
    image = _phantom_image(phantom_demo, 3)
    notes = tmp_path / "notes.json"
    notes.write_text('{"patient": "keep"}')
    for flags in ([], ["--force"]):
        res = _run("infer", bundle, image, "-o", tmp_path / f"o{len(flags)}", "--report", notes, *flags)
        assert res.exit_code == 2 and "notes.json" in res.output and "not an edgeseg infer report" in res.output
        assert "--force" not in res.output.split("not an edgeseg infer report")[1]
    assert notes.read_text() == '{"patient": "keep"}' and not (tmp_path / "o0").exists()
    report = tmp_path / "run.json"
    assert _run("infer", bundle, image, "-o", tmp_path / "a", "--report", report).exit_code == 0
    res = _run("infer", bundle, image, "-o", tmp_path / "b", "--report", report)
    assert res.exit_code == 2 and "pass --force to replace it" in res.output
    assert _run("infer", bundle, image, "-o", tmp_path / "b", "--report", report, "--force").exit_code == 0
    assert json.loads(report.read_text())["out"] == str(tmp_path / "b")


# item 8: a killed infer leaves a temporary file; the next run into that folder removes it and says so

def test_temporary_file_of_a_killed_infer_is_swept_by_the_next_run(bundle, phantom_demo, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import edgeseg.data.io as io
        real = io.atomic_write
        def write_then_die(path, write, before_rename=None):  # SIGKILL once the first output's temporary
            if ".edgeseg-cases" in str(path):               # file is fully written (the sidecar comes first)
                return real(path, write, before_rename)
            def then_die(tmp):
                write(tmp)
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, then_die, before_rename)
        io.atomic_write = write_then_die
        from edgeseg.cli import main
        sys.argv = ["edgeseg", "infer", {str(bundle)!r}, {str(_phantom_image(phantom_demo, 4))!r}, "-o", {str(out)!r}]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".edgeseg-cases"]
    assert len(left) == 1 and not (out / "phantom_0004.png").exists()
    res = _run("infer", bundle, _phantom_image(phantom_demo, 4), "-o", out, "--report", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert not left[0].exists() and (out / "phantom_0004.png").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["swept"] == [str(left[0])]
    assert "removed 1 temporary file(s) of killed edgeseg runs" in res.output


def test_resume_redoes_an_input_rewritten_with_its_old_size_and_mtime(bundle, phantom_demo, tmp_path):
    """cp -p, rsync -a and tar set a file's mtime back; its ctime and inode still tell a new file."""
    import os
    import shutil

    image, out = _copy_inputs(phantom_demo, tmp_path / "in", 1)[0], tmp_path / "out"
    assert _run("infer", bundle, image, "-o", out).exit_code == 0
    before = os.stat(image)
    replacement = tmp_path / "other.png"  # a new file (here with the same bytes) put in place as cp -p would
    shutil.copy2(image, replacement)
    os.replace(replacement, image)
    assert os.stat(image).st_size == before.st_size and os.stat(image).st_mtime_ns == before.st_mtime_ns
    res = _run("infer", bundle, image, "-o", out, "--resume", "--report", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert not report["skipped"] and "pass --force" in report["failed"][0]["error"], res.output


def test_a_second_infer_into_a_folder_being_written_is_refused(bundle, phantom_demo, tmp_path):
    from edgeseg.infer.ledger import CASES_DIR, output_lock

    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):  # another run holds the folder
        res = _run("infer", bundle, _phantom_image(phantom_demo, 1), "-o", out)
        assert res.exit_code == 2 and "another edgeseg infer is writing into this folder" in res.output, res.output
        assert not (out / "phantom_0001.png").exists()
    assert not (out / CASES_DIR).exists()  # the lock goes with its holder
    assert _run("infer", bundle, _phantom_image(phantom_demo, 1), "-o", out).exit_code == 0
    assert not (out / CASES_DIR).exists()


# item 12: broken geometry in one input: one line naming it, the others processed (any other failure of one
# input: tests/test_infer.py::test_an_unexpected_failure_of_one_input_stops_only_that_input)

def _dicom_without(folder, phantom_volume, edit):
    _dicom_series(folder, phantom_volume)
    for path in folder.iterdir():
        ds = pydicom.dcmread(str(path))
        edit(ds)
        ds.save_as(str(path))


def test_broken_geometry_stops_only_its_input(bundle, phantom_demo, tmp_path):
    volume = np.random.default_rng(1).uniform(0, 100, (12, 10, 4)).round()
    folder = tmp_path / "in"
    _dicom_without(folder / "no_position", volume, lambda ds: delattr(ds, "ImagePositionPatient"))
    _dicom_without(folder / "one_spacing", volume, lambda ds: setattr(ds, "PixelSpacing", [0.8]))
    header = nib.Nifti1Header()
    header.set_qform(np.diag([0.8, 0.8, 2.0, 1.0]), code=1)
    header["pixdim"][1] = np.nan
    nib.save(nib.Nifti1Image(np.ones((20, 20, 4), np.float32), None, header), str(folder / "nan_pixdim.nii.gz"))
    (folder / "good.png").write_bytes(_phantom_image(phantom_demo).read_bytes())
    res = _run("infer", bundle, folder, "-o", tmp_path / "out")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output  # no traceback
    lines = res.output.splitlines()
    assert any("no_position" in line and "ImagePositionPatient" in line for line in lines), res.output
    assert any("one_spacing" in line and "PixelSpacing" in line for line in lines), res.output
    assert any("nan_pixdim.nii.gz" in line and "pixdim" in line for line in lines), res.output
    assert "3 input(s) failed, 1 segmented" in res.output and (tmp_path / "out" / "good.png").is_file()


# item 13: memory per image is bounded: too many pixels are refused from the header, before decoding

def _png_header_only(path, width, height):
    """A PNG whose header declares width × height but holds no pixel data (decoding it would fail)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_too_many_pixels_are_refused_from_the_header_before_decoding(bundle, phantom_demo, tmp_path):
    _png_header_only(tmp_path / "bomb.png", 9400, 9400)
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.uint8)
    with open(tmp_path / "huge.nii", "wb") as f:  # the header alone: 1 GiB of voxels it does not have
        f.write(header.binaryblock + b"\0" * 4)
    series = tmp_path / "series"
    _dicom_series(series, np.zeros((4, 4, 3)))
    for path in series.iterdir():
        ds = pydicom.dcmread(str(path))
        ds.Rows = ds.Columns = 8192
        ds.save_as(str(path))
    good = _phantom_image(phantom_demo)
    res = _run("infer", bundle, tmp_path / "bomb.png", tmp_path / "huge.nii", series, good, "-o", tmp_path / "out")
    assert res.exit_code == 1, res.output
    assert "bomb.png: 9400×9400 = 88,360,000 pixels, above --max-pixels 33,554,432" in res.output
    assert "huge.nii: 1024×1024×1024 = 1,073,741,824 voxels, above --max-voxels 134,217,728" in res.output
    assert "series: 8192×8192×3 = 201,326,592 voxels, above --max-voxels" in res.output
    assert "3 input(s) failed, 1 segmented" in res.output
    res = _run("infer", bundle, good, "-o", tmp_path / "out2", "--max-pixels", 128 * 127)  # the limit is the user's
    assert res.exit_code == 1 and "128×128 = 16,384 pixels, above --max-pixels 16,256" in res.output
    assert _run("infer", bundle, good, "-o", tmp_path / "out3", "--max-pixels", 128 * 128).exit_code == 0


def test_hidden_dimensions_count_against_the_size_limit(bundle, phantom_demo, tmp_path):
    """A NIfTI's fourth dimension and a DICOM file's frames take memory too: refused from the headers."""
    import pydicom

    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16, 40), np.uint8), np.eye(4)), str(folder / "t4d.nii.gz"))
    _dicom_series(folder / "series", np.zeros((16, 16, 2)))
    first = sorted((folder / "series").iterdir())[0]
    ds = pydicom.dcmread(str(first))
    ds.NumberOfFrames = 400  # the header claims 400 frames: counted before any pixel is decoded
    ds.save_as(str(first))
    res = _run("infer", bundle, folder, "-o", tmp_path / "out", "--max-voxels", "100000")
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert "16×16×16×40 = 163,840 voxels" in res.output and "16×16×401 = 102,656 voxels" in res.output


def test_outputs_of_two_inputs_never_take_each_others_names(bundle, phantom_demo, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "a_overlay.png", "b.png", "b.tif"):  # b.tif: another input of case b (one sidecar)
        (folder / name).write_bytes(_phantom_image(phantom_demo).read_bytes())
    res = _run("infer", bundle, folder, "-o", tmp_path / "out", "--overlay", "--report", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [f["input"] for f in report["failed"] if "take names" in f["error"]] == [str(folder / "a_overlay.png"),
                                                                                   str(folder / "b.tif")]
    assert report["done"] == ["a", "b"], res.output
    ledger = [json.loads(line)["file"] for line in (tmp_path / "out" / LEDGER).read_text().splitlines()[1:]]
    assert len(ledger) == len(set(ledger))


def test_channel_files_in_different_places_are_refused(tmp_path):
    from edgeseg.errors import EdgesegError
    from edgeseg.infer.inputs import InputItem, read_item

    shifted = np.eye(4)
    shifted[0, 3] = 500.0
    for i, affine in enumerate((np.diag([-1.0, -1, 1, 1]), np.diag([1.0, 1, 1, 1]))):  # mirrored, then shifted
        paths = [tmp_path / f"c{i}_0000.nii.gz", tmp_path / f"c{i}_0001.nii.gz"]
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.diag([1.0, 1, 1, 1])), str(paths[0]))
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), affine if i == 0 else shifted), str(paths[1]))
        try:
            read_item(InputItem(f"c{i}", paths, "nifti"))
            raise AssertionError("read")
        except EdgesegError as exc:
            assert "affine differs" in str(exc)


def test_inputs_that_are_not_files_and_empty_folders_are_reported_not_waited_on(bundle, phantom_demo, tmp_path):
    import os

    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    (tmp_path / "empty").mkdir()
    image = _phantom_image(phantom_demo)
    res = _run("infer", bundle, fifo, tmp_path / "empty", image, image, "-o", tmp_path / "out",
               "--report", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert {f["input"]: f["error"] for f in report["failed"]} == {
        str(fifo): "not a regular file", str(tmp_path / "empty"): "no image, volume or DICOM series in this folder"}
    assert report["done"] == ["phantom_0001"] and res.exit_code == 1  # the same image twice: segmented once


def test_a_report_path_that_could_take_an_outputs_name_is_refused_before_the_run(bundle, phantom_demo, tmp_path):
    out, image = tmp_path / "out", _phantom_image(phantom_demo)
    (tmp_path / "file").write_text("")
    (tmp_path / "cases").symlink_to(out / ".edgeseg-cases")  # the sidecar folder through a link
    for report in (out / "phantom_0001.png", out / LEDGER, out / ".edgeseg-cases" / "r.json", tmp_path / "file" / "r.json",
                   tmp_path / "cases" / "phantom_0001.json"):
        res = _run("infer", bundle, image, "-o", out, "--report", report)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert not out.exists()
    res = _run("infer", bundle, image, "-o", tmp_path / "file" / "sub")
    assert res.exit_code == 2 and "cannot create the output folder" in res.output, res.output
    assert _run("infer", bundle, image, "-o", out, "--report", out / "run.json").exit_code == 0


def test_a_linked_cases_folder_is_refused_and_what_it_points_to_untouched(bundle, phantom_demo, tmp_path):
    victim, out = tmp_path / "proj", tmp_path / "out"
    victim.mkdir()
    (victim / "phantom_0001.json").write_text("my config")
    out.mkdir()
    (out / ".edgeseg-cases").symlink_to(victim)
    res = _run("infer", bundle, _phantom_image(phantom_demo), "-o", out)
    assert res.exit_code == 2 and "is not a plain folder" in res.output, res.output
    assert [p.name for p in victim.iterdir()] == ["phantom_0001.json"]
    assert (victim / "phantom_0001.json").read_text() == "my config"


def test_a_resumed_case_keeps_what_the_killed_run_sealed_and_the_ledger_survives_torn_appends(tmp_path):
    from edgeseg.infer.inputs import InputItem
    from edgeseg.infer.ledger import LEDGER_NAME, CaseSidecars, OutputLedger

    out = tmp_path / "out"
    out.mkdir()
    mask = out / "x.png"
    mask.write_bytes(b"bytes the killed run wrote")
    sealed = hashlib.sha256(mask.read_bytes()).hexdigest()
    (out / ".edgeseg-cases").mkdir()
    (out / ".edgeseg-cases" / "x.json").write_text(json.dumps({"state": "writing", "files": ["x.png"],
                                                                "sealed": {"x.png": sealed}}))
    item = InputItem("x", [tmp_path / "x.png"], "2d")
    CaseSidecars(out, {}).begin(item, {"mask": mask})  # the next run begins the case again, then is killed
    assert OutputLedger(out, {})._pending(mask)  # the old bytes, still in place, are still edgeseg's
    (out / LEDGER_NAME).write_text("")  # a kill right after creating the ledger
    ledger = OutputLedger(out, {})
    ledger.append([{"file": "a.png", "sha256": "0" * 64}])
    with open(out / LEDGER_NAME, "a") as f:
        f.write('{"file": "b.png", "sha2')  # an append cut short
    OutputLedger(out, {}).append([{"file": "c.png", "sha256": "1" * 64}])
    assert sorted(OutputLedger(out, {}).files) == ["a.png", "c.png"]
