"""A tenant's offline folder (``adapters.local.offline.FolderLocation``) on a real file system:
nothing reaches outside the tenant's area, even when a folder is swapped for a link after the job
was accepted (the check and the use are one step: every operation walks from the area with
``O_NOFOLLOW``)."""

from __future__ import annotations

import os

import pytest

from infaas.adapters.local.offline import FolderLocation
from infaas.core.errors import Forbidden, InvalidInput


@pytest.fixture()
def areas(tmp_path):
    mine, theirs = tmp_path / "offline" / "team-a", tmp_path / "offline" / "team-b"
    for folder in (mine / "in", mine / "out", theirs / "in", theirs / "out"):
        folder.mkdir(parents=True)
    (mine / "in" / "rows.npy").write_bytes(b"mine")
    (theirs / "in" / "secret.npy").write_bytes(b"theirs")
    (theirs / "out" / "results.out.npz").write_bytes(b"their results")
    return mine, theirs


def swap_for_link(folder, target) -> None:
    """What an attacker with a shell in its own area does while its job runs."""
    os.rename(folder, str(folder) + ".old")
    os.symlink(target, folder)


def test_reads_and_writes_inside_the_area(areas):
    mine, _ = areas
    loc = FolderLocation(str(mine), "in")
    assert loc.uri == "in" and loc.list() == ["rows.npy"] and loc.read("rows.npy") == b"mine"
    out = FolderLocation(str(mine), "out/new/deeper")
    out.write_atomic("rows.out.npz", b"answer")
    assert (mine / "out" / "new" / "deeper" / "rows.out.npz").read_bytes() == b"answer"
    assert out.exists("rows.out.npz") and not out.exists("missing.out.npz")
    assert os.listdir(mine / "out" / "new" / "deeper") == ["rows.out.npz"]  # no temporary file left
    assert FolderLocation(str(mine), str(mine / "in")).uri == "in"  # an absolute path inside the area


@pytest.mark.parametrize("path", ["../team-b/in", "in/../../team-b/in"])
def test_paths_out_of_the_area_are_refused(areas, path):
    mine, theirs = areas
    with pytest.raises(Forbidden) as info:
        FolderLocation(str(mine), path)
    assert info.value.field == "location"
    with pytest.raises(Forbidden):
        FolderLocation(str(mine), str(theirs / "in"))


def test_an_input_folder_swapped_for_a_link_after_the_check_reads_nothing_of_theirs(areas):
    mine, theirs = areas
    loc = FolderLocation(str(mine), "in")
    assert loc.list() == ["rows.npy"]  # accepted: a real folder in the area
    swap_for_link(mine / "in", theirs / "in")
    for step in (loc.list, lambda: loc.read("secret.npy")):
        with pytest.raises(InvalidInput) as info:
            step()
        assert "link" in info.value.message and str(theirs) not in info.value.message


def test_an_output_folder_swapped_for_a_link_writes_nothing_of_theirs(areas):
    mine, theirs = areas
    loc = FolderLocation(str(mine), "out")
    loc.write_atomic("first.out.npz", b"one")
    swap_for_link(mine / "out", theirs / "out")
    with pytest.raises(InvalidInput):
        loc.write_atomic("results.out.npz", b"overwritten")
    assert not loc.exists("results.out.npz")
    assert (theirs / "out" / "results.out.npz").read_bytes() == b"their results"
    assert sorted(os.listdir(theirs / "out")) == ["results.out.npz"]


def test_a_link_higher_up_the_path_is_refused_too(areas):
    mine, theirs = areas
    os.symlink(theirs, mine / "elsewhere")
    with pytest.raises(Forbidden):  # refused as the location is named
        FolderLocation(str(mine), "elsewhere/in")
    with pytest.raises(Forbidden):
        FolderLocation(str(mine), "elsewhere/out")
    # a link that appears after the location was named is refused when it is used
    loc = FolderLocation(str(mine), "later/in")
    os.symlink(theirs, mine / "later")
    with pytest.raises(InvalidInput):
        loc.list()
    with pytest.raises(InvalidInput):
        loc.write_atomic("x.out.npz", b"x")
    assert sorted(os.listdir(theirs / "out")) == ["results.out.npz"]


def test_a_linked_file_is_neither_listed_nor_read(areas):
    mine, theirs = areas
    os.symlink(theirs / "in" / "secret.npy", mine / "in" / "linked.npy")
    loc = FolderLocation(str(mine), "in")
    assert loc.list() == ["rows.npy"]
    with pytest.raises(InvalidInput):
        loc.read("linked.npy")


def test_odd_names_are_a_400_not_a_crash(areas):
    mine, _ = areas
    with pytest.raises(InvalidInput):
        FolderLocation(str(mine), "in\0x")
    loc = FolderLocation(str(mine), "in")
    for name in ("", ".hidden", "a/b", "x\0y"):
        with pytest.raises(InvalidInput):
            loc.read(name)
