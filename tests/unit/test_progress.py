"""Progress bars work without warnings in a terminal, and in a notebook with or without ipywidgets."""

import warnings

import pytest

from course_utils import training


def test_a_terminal_gets_a_text_bar_without_warnings(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with training.progress_bar(total=3, desc="training") as bar:
            bar.update(3)
    assert type(bar).__module__ == "tqdm.std"


@pytest.mark.parametrize("widgets", [True, False])
def test_a_notebook_kernel_gets_a_bar_without_warnings(tmp_path, widgets):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if widgets:
        pytest.importorskip("ipywidgets")
    hide = "" if widgets else "import sys; sys.modules['ipywidgets'] = None  # as if not installed\n"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        hide + "import warnings; warnings.simplefilter('always')\n"
        "from course_utils import training\n"
        "with training.progress_bar(total=3, desc='training') as bar:\n    bar.update(3)\n"
        "print(type(bar).__module__)")]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "IProgress" not in stderr and "Warning" not in stderr, stderr
    assert stdout.strip().splitlines()[-1] == ("tqdm.notebook" if widgets else "tqdm.std")
