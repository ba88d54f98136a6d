"""The place-map file: version 2's sections (``container``), its stored descriptors read and
checked a row at a time (``filerows``), version 1 (``version1``, read only), and a map to
and from its parts (``persist``)."""
