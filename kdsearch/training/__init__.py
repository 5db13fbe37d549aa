"""Training: the KD loss, optimizer and recipe, the one loop (distill.fit), the teacher-logit cache, the teacher.

Search trials, final training and teacher fine-tuning all train through `distill.fit`: the search
passes an `on_epoch` callback that records the curve and prunes (by raising `optuna.TrialPruned`),
final training passes none, the teacher's prints its loss.
"""
