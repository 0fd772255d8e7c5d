"""Label pull: the products chosen, the rule decisions, and the reviews of disagreements, back
into the manifest; a photo whose product was just chosen goes out with the next push.

Nothing here loads a network, so a pull started by an answer saved begins in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.layout import Layout
from core.settings import LabelConfig
from curation.labeling.client import LabelStudioClient
from curation.labeling.product_choice import pull_choices
from curation.labeling.review import pull_reviews, push_reviews
from curation.labeling.rule_answers import pull_rules
from curation.labeling.shapes import rules_view


@dataclass
class PullSummary:
    project_id: int
    decided: int = 0
    accepted: int = 0
    rejected: int = 0
    unchanged: int = 0
    chosen: int = 0  # new answers on which product a photo shows
    waiting: int = 0  # tasks asked of two people, answered by one so far
    disputed: int = 0  # photos its two annotators decided differently, sent to review
    reviewed: int = 0  # reviewers' decisions among the new decisions
    malformed: int = 0  # answers the rules cannot read: their tasks wait, each a row of bad_answers

    def __str__(self) -> str:
        return (
            f"{self.decided} new decisions ({self.accepted} accepted, {self.rejected} rejected; "
            f"{self.reviewed} by review), {self.unchanged} unchanged, project {self.project_id}; "
            f"{self.waiting} waiting for a second annotator, {self.disputed} disagreements sent to review; "
            f"{self.chosen} products chosen"
            + (f"; {self.malformed} answers that cannot be read (table bad_answers)" if self.malformed else "")
        )


def pull(config: LabelConfig, layout: Layout, client: LabelStudioClient, full: bool = False) -> PullSummary:
    """Records the products chosen and the rule decisions made since the last pull; `full` reads
    every answered task again, not only those changed since the last complete pull."""
    # Found by its title alone (push sets the project up): one request, as a pull runs on every answer saved.
    project_id = client.project_id(config.project_title) or client.ensure_project(
        config.project_title, layout.store_dir, rules_view(config.min_coverage)
    )
    summary = PullSummary(project_id)
    # The rules' answers first: the pull an answer saved started is waited for on those.
    pulled = pull_rules(config, layout, client, project_id, full)
    summary.unchanged, summary.waiting, summary.malformed = pulled.unchanged, pulled.waiting, pulled.malformed
    summary.chosen = pull_choices(config, layout, client)
    summary.disputed = push_reviews(config, layout, client)
    reviewed = pull_reviews(config, layout, client)
    decisions = pulled.decisions + reviewed
    summary.reviewed = len(reviewed)
    summary.decided = len(decisions)
    summary.accepted = sum(d.decision == "accept" for d in decisions)
    summary.rejected = sum(d.decision == "reject" for d in decisions)
    return summary
