"""Search by photo: the product index and its stage, object proposals, the Finder's one answer,
pictures and the shopper's page; on the loaded ensemble from training/, never the other way."""
