"""The search stage (PhoneLM): enumerate architectures under a parameter budget, rank them with a
fitted latency model, time the promising ones on the real engine, report the winner."""
