"""otgate.sinks"""
