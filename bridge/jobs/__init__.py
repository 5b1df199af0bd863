"""Jobs: what a request asks for (spec), the queue and worker that run them, the journal that records them."""
