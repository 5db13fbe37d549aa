"""One-shot search: one supernet trained once, then thousands of its subnets evaluated with inherited weights.

supernet: the space of subnets of a family, slicing a subnet's weights out of the largest student and
extracting it as a standalone student; train: the sandwich rule with in-place distillation (BigNAS);
evaluate: batch-norm recalibration and validation accuracy of a subnet.
"""
