"""Voice-AI back ends behind one interface (``base.Backend``), driven by the Upstream actor."""
