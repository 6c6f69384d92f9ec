"""User-file readers reject bad files with the file, the line and the problem; vocab and batching."""

import pytest
import torch

from rnnkit.data import BucketBatchSampler, DataError, Vocab, pad, read_blocks, read_lines, read_table


def write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def test_table_reads_rows_with_line_numbers(tmp_path):
    p = write(tmp_path, "d.csv", 'text,label\n"hello, world",pos\n\nbad day,neg\n')
    assert read_table(p, ["text", "label"]) == [(2, {"text": "hello, world", "label": "pos"}),
                                                 (4, {"text": "bad day", "label": "neg"})]


def test_tsv_by_suffix(tmp_path):
    p = write(tmp_path, "d.tsv", "source\ttarget\nc a t\tK AE T\n")
    assert read_table(p, ["source", "target"])[0][1] == {"source": "c a t", "target": "K AE T"}


def test_missing_column_names_file_line_and_columns(tmp_path):
    p = write(tmp_path, "d.csv", "text,sentiment\nhi,pos\n")
    with pytest.raises(DataError, match=r"d\.csv, line 1: missing column\(s\) \['label'\]") as e:
        read_table(p, ["text", "label"])
    assert e.value.line == 1 and e.value.path == str(p)


def test_ragged_row_names_its_line(tmp_path):
    p = write(tmp_path, "d.csv", "text,label\na,pos\nb,neg,extra\n")
    with pytest.raises(DataError, match=r"d\.csv, line 3: has 3 field\(s\) but the header has 2"):
        read_table(p, ["text", "label"])


def test_empty_required_field(tmp_path):
    p = write(tmp_path, "d.csv", "text,label\na,\n")
    with pytest.raises(DataError, match=r"line 2: column 'label' is empty"):
        read_table(p, ["text", "label"])


@pytest.mark.parametrize("content", ["", "   \n\n"])
def test_empty_file(tmp_path, content):
    p = write(tmp_path, "d.csv", content)
    with pytest.raises(DataError, match=r"d\.csv: the file is empty"):
        read_table(p, ["text"])


def test_header_only(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        read_table(write(tmp_path, "d.csv", "text,label\n"), ["text", "label"])


def test_wrong_encoding_names_line_and_column(tmp_path):
    p = write(tmp_path, "d.csv", "text,label\nok,pos\ncaf\xe9,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"d\.csv, line 3: is not valid UTF-8 \(byte 0xe9 at column 4\)"):
        read_table(p, ["text", "label"])


def test_missing_file():
    with pytest.raises(DataError, match="no such file"):
        read_lines("/nonexistent/file.txt")


def test_blocks_and_their_errors(tmp_path):
    p = write(tmp_path, "t.txt", "Paris\tB-loc\nis\tO\n\nhi\tO\n")
    assert read_blocks(p) == [(1, [["Paris", "B-loc"], ["is", "O"]]), (4, [["hi", "O"]])]
    bad = write(tmp_path, "b.txt", "Paris\tB-loc\nis O\n")
    with pytest.raises(DataError, match=r"b\.txt, line 2: needs 2 non-empty tab-separated fields"):
        read_blocks(bad)


def test_bom_and_crlf(tmp_path):
    p = write(tmp_path, "d.csv", "\ufefftext,label\r\nx,y\r\n")
    assert read_table(p, ["text", "label"]) == [(2, {"text": "x", "label": "y"})]


def test_vocab_ids_and_roundtrip():
    v = Vocab.build([["b", "a", "b"], ["c"]], min_freq=1)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and v.itos[4] == "b"
    assert v.encode(["a", "zzz"], eos=True) == [v.stoi["a"], 3, 2]
    assert v.decode([1, v.stoi["c"], 2, v.stoi["a"]]) == ["c"]
    assert Vocab.from_dict(v.to_dict()).itos == v.itos


def test_pad_and_buckets():
    x, lengths = pad([[1, 2, 3], [4]])
    assert x.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="empty sequence at index 1"):
        pad([[1], []])
    lens = [int(v) for v in torch.randint(1, 50, (200,))]
    batches = list(BucketBatchSampler(lens, 16, seed=1))
    assert sorted(i for b in batches for i in b) == list(range(200))
    spread = sum(max(lens[i] for i in b) - min(lens[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # sorted within pools: far less padding than random batches (~45)


def test_bucket_sampler_shards_over_ranks(monkeypatch):
    import rnnkit.data.collate as collate

    lens = list(range(1, 51))
    single = list(BucketBatchSampler(lens, 4, seed=3))  # 13 batches
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(collate, "rank_world", lambda rank=rank: (rank, 2))
        sampler = BucketBatchSampler(lens, 4, seed=3)
        shards.append(list(sampler))
        assert len(sampler) == 7 == len(shards[-1])
    assert shards[0][:6] + shards[1][:6] == single[0:12:2] + single[1:12:2]
    assert {i for s in shards for b in s for i in b} == set(range(50))
