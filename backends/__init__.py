"""Model backends behind one small interface (`backends.base.Backend`)."""
