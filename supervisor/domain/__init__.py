"""The domain: plain data, status classes and policy, the decision core, history rows and
the monitoring verdict. Pure: no I/O, no clock; time and randomness are arguments."""
