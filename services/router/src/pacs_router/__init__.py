"""cloudpacs router: forwards newly stored instances to other facilities by rule (C-STORE or
STOW-RS) through a durable Kafka queue per destination, and prefetches a patient's prior
studies from a remote archive when an order arrives."""
