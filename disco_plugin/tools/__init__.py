"""DisCo tools: a short fit on synthetic clips (:mod:`.shortfit`) and its picture (:mod:`.picture`)."""
