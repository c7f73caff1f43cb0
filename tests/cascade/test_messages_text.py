"""Conversation -> chat messages, sentence cutting, and words heard at a playback position."""

from __future__ import annotations

from duplex.agents.conversation import (
    AudioPart,
    FunctionCall,
    FunctionCallOutput,
    Item,
    Message,
)
from duplex.backends.cascade.messages import MISSING_OUTPUT, chat_tool_choice, to_chat_messages
from duplex.backends.cascade.text import SentenceSplitter, SpokenSegment, heard_text


def test_items_map_to_chat_messages() -> None:
    items: list[Item] = [
        Message.text_message("developer", "Be brief."),
        Message(role="user", content=(AudioPart(transcript="Weather in Paris and Rome?"),)),
        Message(role="assistant", content=(AudioPart(transcript="Let me check."),)),
        FunctionCall("c1", "get_weather", '{"city": "Paris"}'),
        FunctionCall("c2", "get_weather", ""),
        FunctionCallOutput("c1", "sunny"),
        FunctionCallOutput("c2", "rainy"),
        FunctionCallOutput("orphan", "dropped"),
        Message(role="assistant", content=(AudioPart(transcript=""),)),  # nothing heard: skipped
        Message.text_message("assistant", "Paris is sunny, Rome rainy."),
    ]
    assert to_chat_messages("You are a concierge.", items) == [
        {"role": "system", "content": "You are a concierge."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
        {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
    ]


def test_call_without_output_gets_a_placeholder_before_the_next_turn() -> None:
    items: list[Item] = [FunctionCall("c1", "f", "{}"), Message.text_message("user", "Hello?")]
    out = to_chat_messages("", items)
    assert out == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": MISSING_OUTPUT},
        {"role": "user", "content": "Hello?"},
    ]


def test_tool_choice_mapping() -> None:
    assert chat_tool_choice("auto") == "auto" and chat_tool_choice(None) is None
    assert chat_tool_choice("book") == {"type": "function", "function": {"name": "book"}}


def test_sentences_are_cut_as_text_streams() -> None:
    sp = SentenceSplitter()
    out: list[str] = []
    for piece in [
        "The weather in Par",
        "is is 3.5 degrees. It is",
        " sunny! Shall I",
        " book it?",
        " Ok",
    ]:
        out.extend(sp.push(piece))
    assert out == ["The weather in Paris is 3.5 degrees.", "It is sunny!", "Shall I book it?"]
    assert sp.flush() == "Ok" and sp.flush() is None


def test_short_fragments_stay_with_what_follows() -> None:
    sp = SentenceSplitter(min_chars=4)
    assert list(sp.push("Hi. Welcome back. ")) == ["Hi. Welcome back."]


def test_run_on_sentences_are_cut_at_a_comma() -> None:
    sp = SentenceSplitter(max_chars=40)
    out = list(sp.push("First we go north along the river, then we turn left at the old mill and"))
    assert out == ["First we go north along the river,"]
    assert sp.flush() == "then we turn left at the old mill and"


def test_heard_text_keeps_whole_sentences_then_a_share_of_words() -> None:
    segs = [
        SpokenSegment("One two three.", 0, 1000),
        SpokenSegment("Four five six seven.", 1000, 2000),
    ]
    assert heard_text(segs, 2500) == "One two three. Four five six seven."
    assert heard_text(segs, 1000) == "One two three."
    assert heard_text(segs, 1500) == "One two three. Four five"
    assert heard_text(segs, 1100) == "One two three."
    assert heard_text(segs, 300) == ""


def test_output_that_arrived_after_later_turns_is_sent_right_after_its_call() -> None:
    items: list[Item] = [
        FunctionCall("c1", "f", "{}"),
        Message.text_message("user", "Never mind."),
        Message.text_message("assistant", "Okay."),
        FunctionCallOutput("c1", "late result"),  # the tool outlasted the caller's next turn
    ]
    assert to_chat_messages("", items) == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "late result"},
        {"role": "user", "content": "Never mind."},
        {"role": "assistant", "content": "Okay."},
    ]


def test_the_first_clause_goes_first_then_whole_sentences() -> None:
    s = SentenceSplitter()
    pieces: list[str] = []
    for word in [
        "You",
        "said:",
        "I",
        "would",
        "like",
        "a",
        "table,",
        "for",
        "two.",
        "Then,",
        "maybe,",
        "wine.",
    ]:
        pieces.extend(s.push(word + " "))
    rest = s.flush()
    assert pieces + ([rest] if rest else []) == [
        "You said:",
        "I would like a table, for two.",
        "Then, maybe, wine.",
    ]


def test_short_openers_and_numbers_are_not_cut_as_clauses() -> None:
    s = SentenceSplitter()
    assert list(s.push("Yes, 1,000 people came. ")) == ["Yes, 1,000 people came."]
    s = SentenceSplitter(first_clause_chars=None)
    assert list(s.push("Well then, here we are. ")) == ["Well then, here we are."]
