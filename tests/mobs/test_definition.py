import pytest

from mobs_app.definition import parse_definition
from mobs_app.errors import DefinitionInvalid
from tests.support.mobs import MOB_TOML


def _problems(source: str) -> list[dict]:
    with pytest.raises(DefinitionInvalid) as err:
        parse_definition(source)
    return err.value.problems


def test_valid_definition_is_normalised():
    parsed = parse_definition(MOB_TOML)
    assert parsed.mob_id == "desk"
    assert parsed.data["mob"]["orchestrator"] == "lead"
    assert parsed.profiles["specialist"]["tools"]["comms"] is True
    assert parsed.profiles["specialist"]["runtime_mode"] == "turn_driven"
    assert parsed.roster is None


def test_every_problem_is_reported_at_once_with_path_and_line():
    source = """[mob]
id = "desk"
orchestrator = "nobody"

[profiles.a]
model = "m"
runtime_mode = "sometimes"
[profiles.a.tools]
comms = "yes"

[wiring]
auto_wire_orchestrator = true
[[wiring.role_wiring]]
a = "a"
b = "ghost"
"""
    problems = {p["path"]: p for p in _problems(source)}
    assert problems["mob.orchestrator"]["line"] == 3
    assert problems["profiles.a.runtime_mode"]["line"] == 7
    assert problems["profiles.a.tools.comms"]["line"] == 9
    assert problems["wiring.role_wiring[0].b"]["line"] == 15
    assert len(problems) == 4


def test_unsupported_sections_are_refused_by_name():
    source = MOB_TOML + '\n[flows.nightly]\ndescription = "x"\n[backend]\ndefault = "subagent"\n'
    problems = {p["path"]: p for p in _problems(source)}
    assert "not supported yet" in problems["flows"]["message"]
    assert problems["flows"]["line"] == MOB_TOML.count("\n") + 2
    assert "not supported yet" in problems["backend"]["message"]


def test_syntax_error_reports_its_line():
    (problem,) = _problems('[mob]\nid = "x"\nbroken = \n')
    assert problem["line"] == 3
    assert "syntax" in problem["message"]


def test_max_sessions_zero_is_refused_naming_max_sessions():
    (problem,) = _problems(MOB_TOML + "\n[limits]\nmax_sessions = 0\n")
    assert problem["path"] == "limits.max_sessions"
    assert "max_sessions" in problem["message"]


def test_roster_entries_are_validated():
    source = (
        MOB_TOML
        + """
[[roster]]
key = "has space"
profile = "specialist"

[[roster]]
key = "a/b"
profile = "specialist"

[[roster]]
key = "ok"
profile = "mute"

[[roster]]
key = "ok"
profile = "specialist"
addressability = "public"
"""
    )
    problems = {p["path"]: p["message"] for p in _problems(source)}
    assert "whitespace" in problems["roster[0].key"]
    assert "'/'" in problems["roster[1].key"]
    assert "comms" in problems["roster[2].profile"]
    assert "already declared" in problems["roster[3].key"]
    assert "roster[3].addressability" in problems
