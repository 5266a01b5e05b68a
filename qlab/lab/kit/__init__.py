"""The classroom kit: code every lesson shares and that knows no lesson.

The kit imports only the core (qlab) and the kit."""
