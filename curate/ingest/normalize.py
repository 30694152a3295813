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
from curate.ingest.readers import blank

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
    if not rows:
        first = con.execute(f"SELECT origin_row, try(json_type(line)) FROM {table} WHERE pre_reason IS NULL "
                            "ORDER BY origin_row LIMIT 1").fetchone()
        what = f"row {first[0]} is {'not JSON' if first[1] is None else 'a JSON ' + first[1].lower()}" if first \
            else "no row is valid"
        raise DataError(
            f"{origin}: no record is a JSON object ({what}); each row must be an object with named fields "
            "(instruction/output, conversations, messages, prompt/response or text): check the file's format"
        )
    if not votes:
        found = ", ".join(sorted(seen)[:12]) or "none"
        raise DataError(
            f"{origin}: cannot detect the row schema (fields: {found}); expected alpaca (instruction/input/output), "
            "sharegpt (conversations), messages, prompt/response or text; rename the fields or pass --schema"
        )
    return votes.most_common(1)[0][0]


FLAT_FIELDS = {  # flat schemas: the fields read in one json_extract per row; source is always last
    "alpaca": ("instruction", "input", "output"),
    "prompt_response": ("prompt", "response", "completion"),
    "text": ("text",),
}


def _flat_sql(schema: str) -> tuple[list[str], str, str, str]:
    """(paths, prompt expr, response expr, reason WHEN-clauses) over ``tv`` (JSON types) and ``sv`` (strings).

    ``tv[1]`` is the type of the whole record and ``tv[k + 1]`` that of ``paths[k]``, so a field is present
    when its type is neither missing (NULL) nor JSON ``null``, and a string when its type is VARCHAR.
    """
    names = FLAT_FIELDS[schema]
    paths = [f'$."{n}"' for n in (*names, "source")]
    i = {n: k + 1 for k, n in enumerate(names)}

    def present(n: str) -> str:
        return f"(tv[{i[n] + 1}] IS NOT NULL AND tv[{i[n] + 1}] <> 'NULL')"

    def bad_type(n: str) -> str:
        return f"WHEN {present(n)} AND tv[{i[n] + 1}] <> 'VARCHAR' THEN 'field {n} is not a string' "

    def required(n: str) -> str:
        return f"WHEN NOT {present(n)} THEN 'missing field {n}' " + bad_type(n)

    if schema == "alpaca":
        prompt = (f"sv[{i['instruction']}] || CASE WHEN coalesce(sv[{i['input']}], '') <> '' "
                  f"THEN chr(10) || chr(10) || sv[{i['input']}] ELSE '' END")
        return paths, prompt, f"sv[{i['output']}]", required("instruction") + bad_type("input") + required("output")
    if schema == "prompt_response":
        resp = f"coalesce(sv[{i['response']}], sv[{i['completion']}])"
        reason = (required("prompt") + f"WHEN NOT {present('response')} AND NOT {present('completion')} "
                  "THEN 'missing field response' " + bad_type("response") + bad_type("completion"))
        return paths, f"sv[{i['prompt']}]", resp, reason
    return paths, "''", f"sv[{i['text']}]", required("text")


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

    Each line is parsed twice, each time for all its fields at once: ``json_type`` with a list of paths (the
    record's type and every field's, NULL for a line that is not JSON) and ``json_extract_string``. The whole
    file is one vectorised pass. Returns the query and its parameters.
    """
    if schema in FLAT_FIELDS:
        paths, prompt, response, reason = _flat_sql(schema)
        plist = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
        extract = f"json_extract_string(line, {plist}) AS sv, NULL AS turns"
        src_type, src_val = f"tv[{len(paths) + 1}]", f"sv[{len(paths)}]"
        messages = "NULL"  # derived on read (see curate.db)
        hashed = "prompt || chr(31) || response"
    elif schema in ("sharegpt", "messages"):
        key, role, content = ("conversations", "from", "value") if schema == "sharegpt" else (
            "messages", "role", "content")
        turns, prompt, response, reason = _chat_sql(key, role, content)
        paths = ["$.source"]
        extract = f"json_extract_string(line, '$.source') AS src_s, NULL AS sv, {turns} AS turns"
        src_type, src_val = "tv[2]", "src_s"
        messages = f"to_json(list_transform(turns, lambda x: {{'role': {ROLE_MAP}, 'content': x.content}}))::VARCHAR"
        hashed = "chat_messages"
    else:
        raise DataError(f"unknown --schema {schema!r}; use auto or one of: {', '.join(SCHEMAS)}")
    # One parse gives the record's type and every field's type (NULL when the line is not JSON); a second one
    # extracts the strings. Nothing else parses the whole line.
    types = "[" + ", ".join(f"'{p}'" for p in ("$", *paths)) + "]"
    query = f"""
    WITH typed AS (
        SELECT origin_row, line AS raw_line, pre_reason,
               CASE WHEN pre_reason IS NULL THEN try(json_type(line, {types})) END AS tv
        FROM raw
    ), valid AS (
        SELECT *, coalesce(tv[1] = 'OBJECT', false) AS ok FROM typed
    ), parsed AS (
        -- JSON functions only ever see well-formed objects, whatever order DuckDB evaluates CASE arms in.
        SELECT origin_row, raw_line, pre_reason, ok, tv, CASE WHEN ok THEN raw_line ELSE '{{}}' END AS line FROM valid
    ), fields AS (
        SELECT *, {extract} FROM parsed
    ), base AS (
        SELECT *, {prompt} AS prompt, {response} AS response, ({src_type}) AS src_type,
               coalesce({src_val}, ?) AS source0
        FROM fields
    ), checked AS (
        SELECT *, CASE
            WHEN pre_reason IS NOT NULL THEN pre_reason
            WHEN NOT ok THEN 'malformed JSON'
            {reason}
            WHEN src_type IS NOT NULL AND src_type NOT IN ('NULL', 'VARCHAR') THEN 'field source is not a string'
            WHEN src_type = 'VARCHAR' AND NOT regexp_full_match(source0, '{SOURCE_NAME_RE}') THEN 'invalid source name'
            WHEN {blank('response')} THEN 'empty response'
            WHEN length(prompt) + length(response) > {int(max_chars)} THEN 'row over --max-chars'
            ELSE NULL END AS reason
        FROM base
    ), final AS (
        SELECT *, CASE WHEN reason IS NULL THEN {messages} END AS chat_messages FROM checked
    )
    SELECT origin_row, CASE WHEN reason IS NOT NULL THEN left(raw_line, 2000) END AS raw, reason,
           CASE WHEN reason IS NULL THEN source0 ELSE ? END AS source, ? AS split, prompt, response, chat_messages,
           CASE WHEN reason IS NULL THEN md5({hashed}) END AS content_hash,
           length(prompt) + length(response) AS n_chars
    FROM final
    """
    return query, [default_source, default_source, split]
