"""The pieces of a streamed answer, and how a reader puts them back in order.

A worker publishes each piece of text as the host produces it, numbered within the job's attempt
(``seq`` 0, 1, 2, ...). When the job's row is final a closing piece says so. A reader may join
late, fall behind a bounded channel, or lose the channel altogether; the
:class:`PieceAssembler` turns whatever it receives into text that is never duplicated and never
has a hole: pieces after a gap are held back, and once the row is final the rest of the answer
comes from the row itself (the whole answer always lands there).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Piece:
    """One published piece: ``text`` of ``attempt``, number ``seq`` within it; or, with
    ``final``, the marker that the job's row is final (no text)."""

    attempt: int
    seq: int
    text: str = ""
    final: bool = False


@dataclass(slots=True)
class PieceAssembler:
    """Accepts pieces in arrival order, returns the text to hand on.

    ``restarts`` counts the times the job began again (a new attempt after a worker died, or a
    retry before anything was sent) after some of its text had been handed on.
    """

    attempt: int = 0
    next_seq: int = 0
    gap: bool = False
    final: bool = False
    restarts: int = 0
    _delivered: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> str:
        """The text handed on for the current attempt."""
        return "".join(self._delivered)

    def accept(self, piece: Piece) -> str | None:
        """The text to hand on for ``piece``, or None (a marker, an old attempt, after a gap)."""
        if piece.final:
            self.final = True
            return None
        if piece.attempt < self.attempt:
            return None
        if piece.attempt > self.attempt or (piece.seq == 0 and self.next_seq > 0):
            self._begin(piece.attempt)
        if piece.seq != self.next_seq:
            # Pieces were trimmed away before this reader got them; the row fills the hole.
            self.gap = self.gap or piece.seq > self.next_seq
            return None
        if self.gap:
            return None
        self.next_seq += 1
        self._delivered.append(piece.text)
        return piece.text

    def remainder(self, response: str) -> str:
        """What the final ``response`` has beyond the text handed on: the answer's tail that
        arrived after a gap, a lost channel, or a reader that stopped reading pieces early.
        Empty when the pieces told it all or the response is not a continuation of them."""
        delivered = self.delivered
        if len(response) > len(delivered) and response.startswith(delivered):
            return response[len(delivered) :]
        return ""

    def _begin(self, attempt: int) -> None:
        if self._delivered:
            self.restarts += 1
        self.attempt = attempt
        self.next_seq = 0
        self.gap = False
        self._delivered = []


__all__ = ["Piece", "PieceAssembler"]
