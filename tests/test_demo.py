"""The two-second demo prints one finite row per attention kind."""

from actattn import demo
from actattn.nn import KINDS


def test_demo_prints_every_kind(capsys):
    demo.main(["--batch", "1", "--seq-len", "16", "--width", "16", "--heads", "2", "--layers", "2"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()}
    for kind in KINDS:
        assert kind in rows and "non-finite" not in rows[kind], kind
