"""A hook module for ``LASHOPS_MOB_HOOKS``: records every call in order."""

calls: list[tuple] = []
refuse: set[str] = set()


def before_create(request: dict) -> None:
    calls.append(("before_create", request["labels"].get("who", "")))
    if request["labels"].get("who") in refuse:
        raise RuntimeError("refused by before_create")
    request["model"] = {**request["model"], "model": "chosen-by-hook"}
    request["labels"] = {**request["labels"], "hooked": "yes"}


def after_create(session_id: str, context: dict) -> None:
    calls.append(("after_create", session_id, context["model"]["model"]))


def post_spawn(mob, identity: str, session_id: str) -> None:
    calls.append(("post_spawn", identity, session_id))


def post_reconcile(mob, report: dict) -> None:
    calls.append(("post_reconcile", sorted(map(tuple, report.get("added", [])))))


def on_error(mob, category: str, identity: str, message: str) -> None:
    calls.append(("on_error", category, identity, message))


def broken_post_spawn(mob, identity: str, session_id: str) -> None:
    raise RuntimeError("best effort hooks never fail the spawn")
