"""helpers.kaggle.inputs.find_input on fake /kaggle/input trees: both dataset layouts and both
Kaggle Models layouts (facts gathered for issue 15: the documented
/kaggle/input/<model>/<framework>/<variation>/<version> and the newer /kaggle/input/models/<owner>/...)."""
import pytest

from helpers.kaggle.inputs import find_input, main


def touch(root, rel, name="config.json"):
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("{}")
    return str(d)


@pytest.mark.parametrize("rel", [
    "bge-en-icl",                                             # dataset, older layout
    "datasets/someone/bge-en-icl",                            # dataset, newer layout
    "bge-en-icl/transformers/default/1",                      # Kaggle Model, documented layout
    "models/baai/bge-en-icl/Transformers/default/2",          # Kaggle Model, newer layout, capital T
])
def test_each_layout_is_found(tmp_path, rel):
    want = touch(tmp_path, rel)
    touch(tmp_path, "datasets/someone/bge-reranker-v2-gemma")  # another model beside it
    touch(tmp_path, rel + "/1_Pooling")                        # a model's own subfolder is not a model
    assert find_input("bge-en-icl", root=str(tmp_path)) == want
    assert find_input("bge-reranker-v2-gemma", root=str(tmp_path)).endswith("bge-reranker-v2-gemma")


def test_the_newest_version_wins_and_real_ambiguity_is_an_error(tmp_path):
    touch(tmp_path, "models/baai/bge-en-icl/transformers/default/1")
    newest = touch(tmp_path, "models/baai/bge-en-icl/transformers/default/3")
    assert find_input("bge-en-icl", root=str(tmp_path)) == newest
    other = touch(tmp_path, "models/baai/bge-en-icl/transformers/merged/1")
    with pytest.raises(ValueError, match="3 folders with config.json match 'bge-en-icl'.*give more of the path"):
        find_input("bge-en-icl", root=str(tmp_path))
    assert find_input("bge-en-icl/transformers/merged", root=str(tmp_path)) == other


def test_nothing_attached_names_what_is(tmp_path, capsys):
    touch(tmp_path, "eedi-mining-misconceptions-in-mathematics", "train.csv")
    with pytest.raises(FileNotFoundError, match="no folder with config.json for 'bge-en-icl'.*attached: "
                                                "eedi-mining-misconceptions-in-mathematics"):
        find_input("bge-en-icl", root=str(tmp_path))
    # a marker other than config.json: the wheels or the code dataset
    assert find_input("eedi-mining-misconceptions-in-mathematics", "train.csv", root=str(tmp_path))


def test_an_existing_path_is_kept_and_the_command_prints_the_folder(tmp_path, capsys):
    assert find_input(str(tmp_path)) == str(tmp_path)
    want = touch(tmp_path, "datasets/me/my-student")
    main(["my-student", "--root", str(tmp_path)])
    assert capsys.readouterr().out.strip() == want
    from helpers.common.cli import run
    with pytest.raises(SystemExit) as e:
        run(main, ["nope", "--root", str(tmp_path)])
    assert e.value.code == 2 and "error: no folder with config.json for 'nope'" in capsys.readouterr().err
