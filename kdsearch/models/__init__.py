"""Models: the students a study searches over and the teachers they learn from."""
