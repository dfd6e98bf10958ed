"""utils.markdown.markdown_table: default and explicit alignment."""

from yolodeploy.utils.markdown import markdown_table


def test_markdown_table_default_and_explicit_aligns():
    assert markdown_table(["model", "AP", "ms"], [["FP32", "0.84", "7.8"], ["PTQ", "0.83", "3.0"]]) == (
        "| model | AP | ms |\n|---|---:|---:|\n| FP32 | 0.84 | 7.8 |\n| PTQ | 0.83 | 3.0 |"
    )
    assert markdown_table(["#", "layer"], [["1", "stem"]], ["---:", "---"]) == "| # | layer |\n|---:|---|\n| 1 | stem |"
    assert markdown_table(["a"], []) == "| a |\n|---|"
