"""One server for a class: shareable links, the capture store, the model's turns."""
