"""pyspk.data.packed: string tables that forked loader workers read without copying them."""

import multiprocessing
import os

import numpy as np
import pytest

from pyspk.data.packed import PackedLists, PackedScp, PackedStrings
from pyspk.train.data import CropDataset
from pyspk.train.synthetic import make_feats_data_dir


def test_packed_scp_is_the_dict_it_was_made_from():
    table = {"b-2": "/x/b.ark:12", "a-1": "/x/a.ark:5", "\u00e9-3": "sox /x/e.flac -t wav - |", "c\udcff": "raw"}
    packed = PackedScp(table)
    assert dict(packed) == table
    assert list(packed) == sorted(table, key=lambda k: k.encode("utf-8", "surrogateescape"))
    assert len(packed) == 4 and "a-1" in packed and "a" not in packed and "a-1x" not in packed and 3 not in packed
    with pytest.raises(KeyError):
        packed["a"]
    assert packed.get("zz", "none") == "none"
    assert len(PackedScp({})) == 0 and "a" not in PackedScp({})


def test_packed_strings_and_lists():
    strings = PackedStrings(["one", "", "thr\u00e9e"])
    assert list(strings) == ["one", "", "thr\u00e9e"] and strings[-1] == "thr\u00e9e" and strings[:2] == ["one", ""]
    with pytest.raises(IndexError):
        strings[3]
    lists = PackedLists({"u1": ["u1-noise", "u1-reverb"], "u2": []})
    assert lists["u1"] == ["u1-noise", "u1-reverb"] and lists["u2"] == []


def utt_id(i):
    return f"id{i:05d}-video{i % 977:04d}-{i:05d}"


def private_growth_kib(table, order, queue):
    """In a forked child: private memory (KiB) gained by looking up every key of ``table`` (in ``order``,
    an array: a list of keys would be copied itself)."""
    def private():
        with open("/proc/self/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))
    before = private()
    for i in order:
        table[utt_id(int(i))]
    queue.put(private() - before)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup")
                    or "fork" not in multiprocessing.get_all_start_methods(), reason="needs Linux /proc and fork")
def test_forked_readers_copy_a_dict_but_not_a_packed_table():
    """Reading a dict of 200,000 strings in a forked process copies its pages (reference counts are
    written); reading the same table packed leaves them shared."""
    table = {utt_id(i): f"/data/fbank/raw_fbank.{i % 40}.ark:{i * 1234}" for i in range(200_000)}
    order = np.random.default_rng(0).permutation(len(table))
    growth = {}
    context = multiprocessing.get_context("fork")
    for name, readable in (("dict", table), ("packed", PackedScp(table))):
        queue = context.Queue()
        child = context.Process(target=private_growth_kib, args=(readable, order, queue))
        child.start()
        growth[name] = queue.get(timeout=60)
        child.join()
    assert growth["dict"] > 8 * 1024, growth  # the pages of the keys and values it read: about 19 MB
    assert growth["packed"] < growth["dict"] / 10, growth


def test_crop_dataset_keeps_its_tables_packed(tmp_path):
    data = make_feats_data_dir(str(tmp_path / "d"), n_spk=2, n_utt=2, copies=("reverb", "noise"))
    dataset = CropDataset(data, {"global": {"count": 2, "frames": 20}}, aug_prob=1.0)
    assert all(isinstance(t, (PackedScp, PackedStrings)) for t in (dataset.feats, dataset.groups, dataset.utts,
                                                                   dataset.clean_of))
    assert list(dataset.utts) == ["spk000-utt000", "spk000-utt001", "spk001-utt000", "spk001-utt001"]
    assert dataset.groups["spk001-utt001"] == ["spk001-utt001-noise", "spk001-utt001-reverb"]
    assert dataset.num_copies == 8 and dataset.clean_of["spk000-utt001-noise"] == "spk000-utt001"
    assert dataset[(3, 0)]["crops"]["global"].shape == (2, 20, 80)
