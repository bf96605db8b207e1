"""What the pages compute from a run: attention statistics, hidden states, flow, experiments, expert
routing, FFN memory, attention from scratch, positions, tokens."""
