import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from braincam import runs
from braincam.errors import BraincamError
from braincam.models.checkpoint import save_tensors
from braincam.runs import RunDir, atomic_write_json, prepare_output_dir, read_npz


def test_prepare_refuses_non_empty_dir_without_force(tmp_path):
    out = tmp_path / "run"
    prepare_output_dir(out)
    (out / "metrics.json").write_text("{}")
    with pytest.raises(BraincamError, match="--force"):
        prepare_output_dir(out)
    prepare_output_dir(out, force=True)
    assert not (out / "metrics.json").exists()


def test_force_spares_what_the_command_reads_and_a_file_in_the_way_is_an_error(tmp_path):
    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    (data / "scan.png").write_bytes(b"x")
    for out, what in ((data, "is"), (data.parent, "holds")):
        with pytest.raises(BraincamError, match=f"{what} {data}, which this command reads"):
            prepare_output_dir(out, force=True, reads=[data])
    assert (data / "scan.png").is_file()
    (tmp_path / "project" / runs.OUTPUT_STAMP).write_text("")  # an output braincam wrote
    prepare_output_dir(tmp_path / "project", force=True, reads=[tmp_path / "elsewhere"])
    assert not data.exists()  # nothing read inside: replaced as asked
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "audit"):
        with pytest.raises(BraincamError, match="afile exists and is not a directory"):
            prepare_output_dir(out)


def test_force_replaces_only_a_folder_braincam_wrote(tmp_path):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "thesis.docx").write_text("years of work")
    for refuse in (lambda: prepare_output_dir(mine, force=True),
                   lambda: runs.refuse_occupied(mine, force=True)):
        with pytest.raises(BraincamError, match="braincam did not write.*choose another"):
            refuse()
    assert (mine / "thesis.docx").read_text() == "years of work"
    made = prepare_output_dir(tmp_path / "run")  # claimed: stamped, so --force may replace it
    (made / "history.csv").write_text("x")
    runs.refuse_occupied(made, force=True)
    prepare_output_dir(made, force=True)
    assert sorted(p.name for p in made.iterdir()) == [runs.OUTPUT_STAMP]
    downloaded = tmp_path / "downloaded"  # another program's model.safetensors is no mark
    downloaded.mkdir()
    save_file({"w": torch.zeros(1)}, str(downloaded / "model.safetensors"))
    (downloaded / "notes.txt").write_text("mine")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"x")
    for folder in (downloaded, tmp_path / "broken"):
        with pytest.raises(BraincamError, match="braincam did not write"):
            prepare_output_dir(folder, force=True)
    assert (downloaded / "notes.txt").read_text() == "mine"
    older = tmp_path / "older"  # a run saved before the stamp: its braincam model shows it
    older.mkdir()
    save_tensors({"w": torch.zeros(1)}, older / "model.safetensors",
                 {"arch": "resnet18", "classes": ["no_tumor", "tumor"]})
    prepare_output_dir(older, force=True)
    assert not (older / "model.safetensors").exists()
    (tmp_path / "link").symlink_to(made)  # a link to a run: not replaced through the link
    (made / "history.csv").write_text("x")
    with pytest.raises(BraincamError, match="link is a link: --force replaces a folder"):
        runs.refuse_occupied(tmp_path / "link", force=True)
    assert (made / "history.csv").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    runs.refuse_occupied(empty, force=False)  # a check: it claims nothing
    assert not any(empty.iterdir())


def test_force_with_a_marker_removes_only_the_owned_files_of_an_earlier_call(tmp_path):
    """The folder may hold other things: ``force`` removes the ``owned`` names, and only where
    the marker shows an earlier call; a ``masks/`` folder of a dataset is never taken for the
    command's own."""
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "expert.png").write_bytes(b"x")
    owned = ("result.json", "masks", "fig_*.png")
    prepare_output_dir(out, force=True, marker="result.json", owned=owned)
    assert (out / "masks" / "expert.png").is_file()  # no earlier call: nothing removed
    (out / "result.json").write_text("{}")
    (out / "fig_a.png").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BraincamError, match="--force"):
        prepare_output_dir(out, marker="result.json", owned=owned)
    prepare_output_dir(out, force=True, marker="result.json", owned=owned)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_file_of_another_command_that_this_one_writes_is_not_replaced_without_force(
        tmp_path):
    """A run folder's skipped.csv, where explain (marker explanations.npz) would write its
    own: refused, and kept, unless ``force``."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "skipped.csv").write_text("path,reason\nbad.png,unreadable\n")
    owned = ("explanations.npz", "skipped.csv", "overlays")
    with pytest.raises(BraincamError, match=r"run holds skipped.csv, which this command would "
                                            r"replace; pass --force"):
        prepare_output_dir(out, marker="explanations.npz", owned=iter(owned))
    assert (out / "skipped.csv").read_text().endswith("unreadable\n")
    prepare_output_dir(out, force=True, marker="explanations.npz", owned=owned)
    (out / "skipped.csv").unlink()
    (out / "notes.txt").write_text("mine")  # other files: no clash
    prepare_output_dir(out, marker="explanations.npz", owned=owned)


def test_an_output_inside_a_dataset_folder_is_refused(tmp_path):
    from braincam.runs import check_outside_data

    data = tmp_path / "data"
    (data / "glioma").mkdir(parents=True)
    for out in (data / "run", data / "glioma" / "run", data):
        with pytest.raises(BraincamError, match=r"lies inside the dataset folder .*data: its"):
            check_outside_data(out, [tmp_path / "other", data])
    check_outside_data(tmp_path / "run", [data])
    check_outside_data(tmp_path / "data-run", [data])  # a sibling whose name starts alike


def test_marker_decides_whether_dir_is_finished(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "partial.txt").write_text("x")
    prepare_output_dir(out, marker="model.safetensors")  # unfinished: reusable
    (out / "model.safetensors").write_bytes(b"x")
    with pytest.raises(BraincamError):
        prepare_output_dir(out, marker="model.safetensors")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    import numpy as np

    path = tmp_path / "a" / "m.json"
    atomic_write_json(path, {"x": np.float32(0.5), "v": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 0.5, "v": [0, 1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_run_dir_layout_names_are_stable(tmp_path):
    run = RunDir(tmp_path)
    names = [run.config, run.model, run.history, run.split, run.skipped, run.metrics, run.report]
    assert [p.name for p in names] == [
        "config.yaml",
        "model.safetensors",
        "history.csv",
        "split.csv",
        "skipped.csv",
        "metrics.json",
        "report.html",
    ]
    nested = [run.predictions, run.upweighted, run.data_audit_json, run.audit_json,
              run.audit_images, run.explanations("gradcam"), run.stages]
    assert [p.relative_to(tmp_path).as_posix() for p in nested] == [
        "predictions.csv",
        "upweighted.csv",
        "data_audit/data_audit.json",
        "audit/audit.json",
        "audit/audit_images.csv",
        "explain/gradcam/explanations.npz",
        ".stages",
    ]


def test_read_config_and_data_roots(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(BraincamError, match="cannot read config.yaml"):
        run.read_config()
    run.config.write_text("data: [/d/a, /d/b]\nseed: 3\n")
    assert run.read_config() == {"data": ["/d/a", "/d/b"], "seed": 3}
    assert [p.name for p in run.data_roots()] == ["a", "b"]
    run.config.write_text("- just a list\n")
    with pytest.raises(BraincamError, match="not a YAML mapping"):
        run.read_config()
    run.config.write_text("seed: 3\n")
    with pytest.raises(BraincamError, match="names no data folders"):
        run.data_roots()


def test_read_split_parses_leak_free_once(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(BraincamError, match="cannot read split.csv"):
        run.read_split()
    run.split.write_text(
        "path,source,label,split,group,leak_free\n"
        "/a.png,s,tumor,train,0,False\n/b.png,s,tumor,test,1,True\n/c.png,s,no_tumor,test,2,false\n"
    )
    table = run.read_split()
    assert table["leak_free"].tolist() == [False, True, False]
    assert table["leak_free"].dtype == bool
    assert run.split_paths("test") == ["/b.png", "/c.png"]
    assert run.split_paths("all") == ["/a.png", "/b.png", "/c.png"]
    run.split.write_text("file,label\n/a.png,tumor\n")
    with pytest.raises(BraincamError, match="no path or split column"):
        run.read_split()


def test_atomic_write_makes_ordinary_readable_files(tmp_path):
    import os
    import stat

    path = tmp_path / "x.txt"
    atomic_write_json(path, {})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_yaml_writes_tuples_as_lists(tmp_path):
    import yaml

    from braincam.runs import atomic_write_yaml

    atomic_write_yaml(tmp_path / "c.yaml", {"widths": (128, 64), "nested": {"pair": (1, "a")}})
    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == {
        "widths": [128, 64], "nested": {"pair": [1, "a"]}}


def test_read_npz_reads_every_array_and_refuses_npy(tmp_path):
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.savez(tmp_path / "a.npz", image=image, name=np.str_("x"))
    arrays = read_npz(tmp_path / "a.npz")
    assert sorted(arrays) == ["image", "name"]
    assert arrays["image"].tolist() == [[0, 1, 2], [3, 4, 5]] and str(arrays["name"]) == "x"
    assert sorted(read_npz(tmp_path / "a.npz", ("name", "absent"))) == ["name"]
    np.save(tmp_path / "b.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        read_npz(tmp_path / "b.npy")


def test_read_npz_reports_a_truncated_or_damaged_archive_as_value_error(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.arange(4000))
    whole = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"cut\.npz: damaged \.npz archive"):
        read_npz(tmp_path / "cut.npz")
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF  # inside the array's bytes: the CRC check fails on read
    (tmp_path / "bad.npz").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="Bad CRC-32"):
        read_npz(tmp_path / "bad.npz")


def test_read_npz_parses_headers_one_thread_at_a_time(tmp_path, monkeypatch):
    """numpy parses npy headers with ast.literal_eval, which CPython 3.11 cannot run in threads
    at once (spurious SystemError); worker pools read cache entries through read_npz."""
    np.savez(tmp_path / "a.npz", x=np.zeros(2))
    inside, most = 0, 0
    guard = threading.Lock()
    load = np.load

    def slow_load(*args, **kwargs):
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)
        with guard:
            inside -= 1
        return load(*args, **kwargs)

    monkeypatch.setattr(runs.np, "load", slow_load)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: read_npz(tmp_path / "a.npz"), range(12)))
    assert most == 1
    assert all(r["x"].tolist() == [0.0, 0.0] for r in results)


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_what_force_replaces_comes_back_unless_the_command_succeeds(tmp_path):
    """Inside replacing() (the CLI's), --force sets the old output aside: a command that fails
    or is interrupted leaves it as it was, one that succeeds leaves only the new."""
    run = tmp_path / "run"
    prepare_output_dir(run)
    (run / "model.safetensors").write_text("old")
    before = _tree(run)
    for failure in (None, KeyboardInterrupt, BraincamError):
        with pytest.raises(failure) if failure else nullcontext(), runs.replacing():
            prepare_output_dir(run, force=True)
            (run / "partial.csv").write_text("new")
            if failure:
                raise failure("stopped")
        assert _tree(run) == before  # no success declared: the old run is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing set aside is left
    with runs.replacing() as outcome:
        prepare_output_dir(run, force=True)
        (run / "model.safetensors").write_text("new")
        outcome[0] = True
    assert _tree(run) == {".braincam-output": before[".braincam-output"],
                          "model.safetensors": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with runs.replacing(active=False):  # run and cv: what they finish stays, to resume from
        prepare_output_dir(run, force=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # deleted at once
    assert _tree(run) == {".braincam-output": before[".braincam-output"]}


def _run_with_guide_set_aside(tmp_path, guide_text):
    """A finished run with a guide that ``train --force`` has moved out to ``.run.guide``."""
    run = tmp_path / "run"
    prepare_output_dir(run)
    (run / "model.safetensors").write_text("old")
    (run / "guide").mkdir()
    (run / "guide" / "model.safetensors").write_text(guide_text)
    kept = tmp_path / ".run.guide"
    (run / "guide").rename(kept)
    return run, kept


def test_owned_files_come_back_and_a_carried_guide_goes_back_with_the_old_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("old")
    (out / "notes.txt").write_text("mine")
    with runs.replacing():
        prepare_output_dir(out, force=True, marker="result.json", owned=("result.json",))
        assert sorted(p.name for p in out.iterdir()) == [".result.json.replaced", "notes.txt"]
    assert _tree(out) == {"notes.txt": "mine", "result.json": "old"}
    run, kept = _run_with_guide_set_aside(tmp_path, "guide")  # as train --force does
    with runs.replacing():
        prepare_output_dir(run, force=True)
        kept.rename(run / "guide")
        runs.carried(run / "guide")
    assert _tree(run)["guide/model.safetensors"] == "guide"
    assert _tree(run)["model.safetensors"] == "old"
    plain = tmp_path / "plain"  # a guide the failed command trained itself does not stay
    prepare_output_dir(plain)
    (plain / "model.safetensors").write_text("old")
    with runs.replacing():
        prepare_output_dir(plain, force=True)
        (plain / "guide").mkdir()
        (plain / "guide" / "model.safetensors").write_text("new guide")
    assert sorted(_tree(plain)) == [".braincam-output", "model.safetensors"]


def test_a_guide_retrained_in_the_new_run_gives_back_the_old_one_on_failure(tmp_path):
    """train --force carries the old guide in; a retrained guide replaces it through
    discard(), so a failure restores the old guide inside the old run."""
    run, kept = _run_with_guide_set_aside(tmp_path, "old guide")
    with pytest.raises(KeyboardInterrupt), runs.replacing():
        prepare_output_dir(run, force=True)
        kept.rename(run / "guide")
        runs.carried(run / "guide")
        new = tmp_path / "run" / ".guide.new"
        new.mkdir()
        (new / "model.safetensors").write_text("new guide")
        runs.discard(run / "guide")
        new.rename(run / "guide")
        raise KeyboardInterrupt
    assert _tree(run) == {".braincam-output": "written by braincam: --force may replace this "
                          "folder\n", "model.safetensors": "old",
                          "guide/model.safetensors": "old guide"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_set_aside_output_left_by_a_killed_command_is_refused_not_deleted(tmp_path):
    run = tmp_path / "run"
    prepare_output_dir(run)
    (tmp_path / ".run.replaced").mkdir()  # the finished output of a killed --force
    with pytest.raises(BraincamError, match=r"\.run\.replaced holds the output of a command "
                                            r"killed while replacing"), runs.replacing():
        prepare_output_dir(run, force=True)
    assert (tmp_path / ".run.replaced").is_dir() and run.is_dir()


def test_a_scratch_folder_goes_when_the_command_fails_and_stays_moved_when_it_succeeds(
        tmp_path):
    new = tmp_path / ".seg.new"
    prepare_output_dir(new)  # an earlier, killed command's
    (new / "leftover").mkdir()
    for succeeds in (False, True):
        with runs.replacing() as outcome:
            runs.scratch(new)
            prepare_output_dir(new, force=True)
            (new / "model.safetensors").write_text("new")
            if succeeds:
                new.rename(tmp_path / "seg")
                outcome[0] = True
        assert sorted(p.name for p in tmp_path.iterdir()) == (["seg"] if succeeds else [])
    runs.scratch(new)  # outside replacing(): nothing to do
