"""One command for the whole chain (`pocketlm pipeline RECIPE --out DIR`): stage functions and the runner."""
