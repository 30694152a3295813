"""Detect a file's row schema and normalise every record to (prompt, response, messages, text) in SQL.

Schemas: ``alpaca`` (instruction, input, output), ``sharegpt`` (conversations of from/value), ``messages``
(OpenAI role/content), ``prompt_response`` (prompt with response or completion) and ``text``. Each record gets a
``reason`` when it cannot be kept (malformed JSON, a missing or wrong-typed field, an empty response, over
``--max-chars``); the checks run in one DuckDB query, never a Python loop per row. For chat rows the response is the
last assistant turn and the prompt is the earlier turns' text joined by blank lines; ``messages`` keeps them all.
"""

from __future__ import annotations

from collections import Counter

import duckdb

from curate.errors import DataError

SCHEMAS = ("alpaca", "sharegpt", "messages", "prompt_response", "text")
SOURCE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"

ROLE_MAP = """CASE lower(x.role) WHEN 'human' THEN 'user' WHEN 'user' THEN 'user' WHEN 'system' THEN 'system'
    WHEN 'gpt' THEN 'assistant' WHEN 'assistant' THEN 'assistant' WHEN 'chatgpt' THEN 'assistant'
    WHEN 'bing' THEN 'assistant' WHEN 'bard' THEN 'assistant' WHEN 'model' THEN 'assistant' ELSE NULL END"""


def detect_schema(con: duckdb.DuckDBPyConnection, table: str, origin: str) -> str:
    """The schema most of the first 1,000 well-formed records match.

    Raises:
        DataError: no record matches any known schema.
    """
    rows = con.execute(
        f"""SELECT json_keys(line) FROM {table} WHERE pre_reason IS NULL AND json_valid(line)
            AND json_type(line) = 'OBJECT' ORDER BY origin_row LIMIT 1000"""
    ).fetchall()
    votes: Counter[str] = Counter()
    seen: set[str] = set()
    for (keys,) in rows:
        ks = set(keys)
        seen |= ks
        if "conversations" in ks:
            votes["sharegpt"] += 1
        elif "messages" in ks:
            votes["messages"] += 1
        elif {"instruction", "output"} <= ks:
            votes["alpaca"] += 1
        elif "prompt" in ks and ({"response", "completion"} & ks):
            votes["prompt_response"] += 1
        elif "text" in ks:
            votes["text"] += 1
    if not votes:
        found = ", ".join(sorted(seen)[:12]) or "no JSON objects"
        raise DataError(
            f"{origin}: cannot detect the row schema (fields: {found}); expected alpaca (instruction/input/output), "
            "sharegpt (conversations), messages, prompt/response or text; rename the fields or pass --schema"
        )
    return votes.most_common(1)[0][0]


def _str(field: str) -> str:
    return f"(line->>'$.\"{field}\"')"


def _is_str(field: str) -> str:
    return f"(json_type(line, '$.\"{field}\"') = 'VARCHAR')"


def _field_reason(field: str, optional: bool = False) -> str:
    missing = f"json_type(line, '$.\"{field}\"') IS NULL OR json_type(line, '$.\"{field}\"') = 'NULL'"
    parts = [] if optional else [f"WHEN {missing} THEN 'missing field {field}'"]
    parts.append(f"WHEN NOT ({missing}) AND NOT {_is_str(field)} THEN 'field {field} is not a string'")
    return " ".join(parts)


def _chat_sql(key: str, role: str, content: str) -> tuple[str, str, str, str]:
    """(turns expr, prompt expr, response expr, reason WHEN-clauses) for sharegpt/messages rows."""
    turns = (f"list_transform(from_json(json_extract(line, '$.{key}'), "
             f"'[{{\"{role}\": \"VARCHAR\", \"{content}\": \"VARCHAR\"}}]'), "
             f"lambda x: {{'role': x.\"{role}\", 'content': x.\"{content}\"}})")
    roles = f"list_transform(turns, lambda x: {ROLE_MAP})"
    reason = (
        f"WHEN json_type(line, '$.{key}') IS NULL THEN 'missing field {key}' "
        f"WHEN json_type(line, '$.{key}') <> 'ARRAY' THEN 'field {key} is not a list' "
        f"WHEN len(turns) < 2 THEN 'field {key} has fewer than 2 turns' "
        f"WHEN len(list_filter(json_type(line, '$.{key}[*].\"{content}\"'), lambda t: t = 'VARCHAR')) <> len(turns) "
        f"OR len(list_filter(json_type(line, '$.{key}[*].\"{role}\"'), lambda t: t = 'VARCHAR')) <> len(turns) "
        f"THEN 'a turn in {key} lacks a string {role}/{content}' "
        f"WHEN len(list_filter({roles}, lambda r: r IS NULL)) > 0 THEN 'unknown role in {key}' "
        f"WHEN {roles}[-1] <> 'assistant' THEN 'last turn in {key} is not from the assistant' "
    )
    prompt = "array_to_string(list_transform(turns[1:-2], lambda x: x.content), chr(10) || chr(10))"
    return turns, prompt, "turns[-1].content", reason


def normalized_select(schema: str, max_chars: int, default_source: str, split: str) -> tuple[str, list]:
    """SQL selecting normalised rows with a ``reason`` (NULL when kept) from the raw table ``raw``.

    Returns the query and its parameters.
    """
    turns = "NULL"
    messages = None
    if schema == "alpaca":
        prompt = (f"{_str('instruction')} || CASE WHEN coalesce({_str('input')}, '') <> '' "
                  f"THEN chr(10) || chr(10) || {_str('input')} ELSE '' END")
        response = _str("output")
        reason = _field_reason("instruction") + " " + _field_reason("input", True) + " " + _field_reason("output")
    elif schema == "prompt_response":
        resp = f"coalesce({_str('response')}, {_str('completion')})"
        prompt, response = _str("prompt"), resp
        reason = (_field_reason("prompt") + " WHEN json_type(line, '$.response') IS NULL AND "
                  "json_type(line, '$.completion') IS NULL THEN 'missing field response' "
                  "WHEN NOT coalesce(json_type(line, '$.response') = 'VARCHAR', "
                  "json_type(line, '$.completion') = 'VARCHAR') THEN 'field response is not a string'")
    elif schema == "text":
        prompt, response = "''", _str("text")
        reason = _field_reason("text")
    elif schema in ("sharegpt", "messages"):
        key, role, content = ("conversations", "from", "value") if schema == "sharegpt" else (
            "messages", "role", "content")
        turns, prompt, response, reason = _chat_sql(key, role, content)
        messages = f"to_json(list_transform(turns, lambda x: {{'role': {ROLE_MAP}, 'content': x.content}}))::VARCHAR"
    else:
        raise DataError(f"unknown --schema {schema!r}; use auto or one of: {', '.join(SCHEMAS)}")
    if messages is None:
        messages = ("CASE WHEN prompt = '' THEN NULL ELSE to_json([{'role': 'user', 'content': prompt}, "
                    "{'role': 'assistant', 'content': response}])::VARCHAR END")
    src = "coalesce(line->>'$.source', ?)"
    query = f"""
    WITH valid AS (
        SELECT origin_row, line AS raw_line, pre_reason,
               CASE WHEN pre_reason IS NULL AND json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END AS ok
        FROM raw
    ), parsed AS (
        -- JSON functions only ever see well-formed objects, whatever order DuckDB evaluates CASE arms in.
        SELECT origin_row, raw_line, pre_reason, ok, CASE WHEN ok THEN raw_line ELSE '{{}}' END AS line FROM valid
    ), fields AS (
        SELECT origin_row, raw_line, line, pre_reason, ok,
               CASE WHEN ok THEN {turns} END AS turns
        FROM parsed
    ), base AS (
        SELECT origin_row, raw_line, line, pre_reason, ok, turns,
               CASE WHEN ok THEN {prompt} END AS prompt, CASE WHEN ok THEN {response} END AS response,
               CASE WHEN ok THEN {src} ELSE ? END AS source
        FROM fields
    ), checked AS (
        SELECT *, CASE
            WHEN pre_reason IS NOT NULL THEN pre_reason
            WHEN NOT ok THEN 'malformed JSON'
            {reason}
            WHEN json_type(line, '$.source') IS NOT NULL AND json_type(line, '$.source') <> 'VARCHAR'
                THEN 'field source is not a string'
            WHEN NOT regexp_full_match(source, '{SOURCE_NAME_RE}') THEN 'invalid source name'
            WHEN trim(coalesce(response, '')) = '' THEN 'empty response'
            WHEN length(prompt) + length(response) > {int(max_chars)} THEN 'row over --max-chars'
            ELSE NULL END AS reason
        FROM base
    )
    SELECT origin_row, raw_line AS raw, reason,
           CASE WHEN reason IN ('invalid source name', 'field source is not a string') THEN ? ELSE source END
               AS source, ? AS split, prompt, response,
           CASE WHEN reason IS NULL THEN {messages} END AS messages,
           CASE WHEN prompt = '' THEN response ELSE prompt || chr(10) || chr(10) || response END AS text,
           md5(coalesce(prompt, '') || chr(31) || coalesce(response, '') || chr(30) ||
               coalesce(CASE WHEN reason IS NULL THEN {messages} END, '')) AS content_hash,
           length(prompt) + length(response) AS n_chars
    FROM checked
    """
    return query, [default_source, default_source, default_source, split]
