"""Price moves recognised by their shape, for the Markets topic of `tagging`.

Data and patterns only: which verbs report a move and what must follow them (a change in
percent, a price level, a high or low). `tagging.Taxonomy` applies them; this module imports
nothing of ours.
"""

from __future__ import annotations

import re

# Price moves, found by their shape rather than by one word, for the MARKETS_TAG topic (which
# like every topic needs crypto context). A move verb counts when a figure follows it: a change
# in percent ("slides 6%", "sube un 5%"; not a share: "5% of the supply", "rose to 66%"), a
# price level (not an amount in millions: "drains $45 million" is no price) or a high or low
# ("tops $105,000", "fällt unter 60.000 Dollar", "sinks to a two-year low"). The commonest
# verbs also count after a coin as their subject, followed by a pause or a preposition ("TRX
# climbs after ...", "Altcoins bleed as ...") but not by an object ("Coinbase drops support").
MARKETS_TAG = "Markets"
_MOVE_VERBS = {
    # after a coin, or before any figure
    "coin or figure": (
        "rise rises rose rising fall falls fell falling drop drops dropped dropping jump jumps jumped jumping "
        "climb climbs climbed climbing slide slides slid sliding slip slips slipped slipping sink sinks sank "
        "sinking dip dips dipped dipping spike spikes spiked spiking rebound rebounds rebounded rebounding "
        "tank tanks tanked tanking dive dives dived diving skyrocket skyrockets skyrocketed plummet plummets "
        "plummeted retreat retreats retreated bleed bleeds bled sag sags sagged edge edges edged lose loses "
        "lost losing steigt stieg fällt fiel sinkt sank springt sprang klettert kletterte stürzt stürzte "
        "rutscht rutschte verliert verlor sube subió cae cayó baja bajó repunta repuntó avanza avanzó "
        "retrocede retrocedió pierde perdió desploma dispara"
    ),
    # "a tax on crypto gains to 20%" is no move
    "coin or percent": "gain gains gained gaining",
    "percent": "shed sheds add adds added up down higher lower",
    # a company crashes and stolen coins are recovered: only before a figure
    "figure": "crash crashes crashed crashing recover recovers recovered recovering",
    # "nears 5% of the supply", "reached 20% adoption": only before a price level or a high/low
    "level": (
        "top tops topped hit hits reach reaches reached break breaks broke reclaim reclaims reclaimed near nears "
        "neared nearing trade trades traded trading pass passes passed cross crosses crossed support resistance "
        "erreicht supera superó alcanza alcanzó"
    ),
}
MOVE_KINDS = {verb: kind for kind, verbs in _MOVE_VERBS.items() for verb in verbs.split()}
COIN_ROOT = "Blockchain/"  # a name or ticker of a node under it can be the subject of a move
_CHANGE = (
    r"(?:[^\S\n]+(?:by|another|nearly|almost|over|more\s+than|about|around|roughly|some|um|un|casi)(?!\w))?"
    r"[^\S\n]+[+-]?\d+(?:[.,]\d+)?\s?(?:%|(?:percent|per\s?cent|prozent|por\s?ciento)(?!\w))"
    r"(?![^\S\n]+(?:of|de|der|des)(?!\w))"
)
_LEVEL = (
    r"(?:[^\S\n]+(?:by|to|toward|towards|over|above|below|under|past|beyond|near|nearly|almost|about|"
    r"around|roughly|more\s+than|another|back|a|an|the|its|their|new|fresh|further|at|unter|über|auf|um|"
    r"bis|fast|knapp|rund|ein|einen|eine|neues|neue|neuen|un|una|hasta|por|encima|debajo|de|del|los|las|el|"
    r"la|más|casi|nuevo|nuevos|nueva|sobre)(?!\w)){0,4}[^\S\n]+"
    r"(?:(?:\$|us\$|€|£)\s?\d[\d,.]*(?![\d,.])(?:\s?k(?!\w))?"
    r"(?!\s?(?:million|billion|trillion|bn|mn|m|mil|millones|millionen|milliarden)(?!\w))"
    r"|\d[\d,.]*(?![\d,.])\s?(?:k\s?)?(?:dollars?|dólares|usd|usdt|euros?)(?!\w)"
    r"|(?:[\w-]+\s+){0,2}(?:highs?|lows?|highest|lowest|hoch|tief|máximos?|mínimos?)(?!\w))"
)
_FIGURE_AFTER = re.compile(f"{_CHANGE}|{_LEVEL}")
FIGURE_AFTER_KIND = {  # what must follow a verb of each kind
    "coin or figure": _FIGURE_AFTER,
    "figure": _FIGURE_AFTER,
    "coin or percent": re.compile(_CHANGE),
    "percent": re.compile(_CHANGE),
    "level": re.compile(_LEVEL),
}
PAUSE_AFTER = re.compile(
    r"[^\S\n]*(?:$|\n|[,.;:!?—–(]|[^\S\n]+(?:as|after|on|amid|ahead|despite|while|following|below|above|"
    r"past|toward|towards|to|before|since|against|higher|lower|sharply|further|again|back|tras|mientras|"
    r"nach|trotz|wegen|weiter)(?!\w))"
)
# Words between a coin and its move verb ("ARB token falls", "MSTR shares climb"), and plural
# words that are the subject of a move as much as a coin is ("Altcoins bleed as ...").
SUBJECT_NOUNS = frozenset(("token", "tokens", "price", "prices", "coin", "coins", "shares", "stock", "futures"))
PLURAL_SUBJECTS = frozenset(("altcoins", "memecoins", "cryptocurrencies", "cryptos", "tokens", "coins"))
