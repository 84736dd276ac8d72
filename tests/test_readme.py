"""The README's two set-up commands are the ones CI and users actually run."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", text, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_exactly_the_demo_and_the_test_command():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python3 -m binidx.demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_the_demo_module_exists_and_has_a_main():
    from binidx import demo

    assert callable(demo.main)
