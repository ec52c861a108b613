"""show_versions's lookups and layout (sk_softreg._show_versions)."""

from importlib.metadata import version

import torch

from sk_softreg import show_versions
from sk_softreg._show_versions import _get_versions, _package_version


def test_package_version_falls_back_to_metadata_then_none():
    # os has no __version__: the distribution's metadata answers
    assert _package_version("pytest", "os") == version("pytest")
    assert _package_version("no-such-dist-sk-softreg", "no_such_module_sk_softreg") is None
    assert _package_version("torch", "torch") == torch.__version__


def test_cuda_section_lists_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    cuda = _get_versions()["CUDA"]
    assert cuda["available"] is True
    assert cuda["devices"] == "GPU0, GPU1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda = _get_versions()["CUDA"]
    assert cuda["available"] is False and cuda["devices"] is None


def test_show_versions_right_aligns_the_keys(capsys):
    show_versions()
    sections = capsys.readouterr().out.strip("\n").split("\n\n")
    assert [s.splitlines()[0] for s in sections] == ["System:", "Python dependencies:", "CUDA:"]
    for section in sections:
        lines = section.splitlines()[1:]
        columns = {line.index(": ") for line in lines}
        assert len(columns) == 1, lines  # one colon column per section
        (column,) = columns
        keys = [line[:column] for line in lines]
        assert all(key == key.strip().rjust(column) for key in keys), keys  # right-aligned
        assert min(len(key) - len(key.lstrip(" ")) for key in keys) == 0  # the longest key at 0
