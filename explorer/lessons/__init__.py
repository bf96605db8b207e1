"""Lessons: a course through the transformer taught on the loaded model, with questions whose answers the
app computes from the model (course, questions, the builders in reading and inside, measure, glossary)."""
